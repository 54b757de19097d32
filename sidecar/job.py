"""One backup run as a pipeline of steps: pre hook → backup (a volume, or a command's output
streamed into restic) → forget/prune → post hook, then the Outcome the sidecar reports.

Each step takes the run's context and returns the next one. A failed step ends the run's
main work: the steps after it are skipped, except those marked ``always`` (the post hook,
which undoes what the pre hook did: an application left frozen is worse than a failed run).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from reconciler.api.backup import Backup
from reconciler.api.constants import PER_POD_HOST_KINDS
from reconciler.api.hooks import exec_containers, runs_commands
from sidecar import restic
from sidecar.hooks import Hook, HookResult, hook_message, run_hook
from sidecar.outcome import SECRET_MISSING, Outcome, missing_password, success_message
from sidecar.podexec import PodExec
from sidecar.repository import Repository
from sidecar.restic import Context, Failure
from sidecar.runner import Result, Runner, redact
from sidecar.stream import StreamResult, dump_into_restic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pod:
    """The sidecar's own pod, where hooks and dump commands run (through pods/exec)."""

    namespace: str
    name: str
    spec: Mapping | None  # None: the pod could not be read (no pods get)
    exec: PodExec


@dataclass(frozen=True)
class RunContext:
    """What a run knows so far."""

    started: float  # time.monotonic() at the start
    repo: Repository
    failed: Outcome | None = None  # the failure that ended the run's main work
    summary: restic.Summary | None = None  # of the snapshot saved
    initialised: bool = False
    containers: Mapping[str, str] = field(default_factory=dict)  # "preBackup" -> container
    failures: tuple[str, ...] = ()  # of steps that ran after the backup (the post hook)
    warnings: tuple[str, ...] = ()  # failures of hooks with onError: Continue

    def fail(self, message: str, **kw) -> RunContext:
        outcome = Outcome(success=False, message=message, duration=0.0, **kw)
        return dataclasses.replace(self, failed=outcome)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Job, RunContext], RunContext]
    always: bool = False  # also after a failed step


def run_steps(job: Job, ctx: RunContext, steps: tuple[Step, ...]) -> RunContext:
    """Run ``steps`` in order. A step that raises still lets the ``always`` steps after it
    run (with the run marked failed), then the exception goes on."""
    for i, step in enumerate(steps):
        if ctx.failed is not None and not step.always:
            continue
        try:
            ctx = step.run(job, ctx)
        except BaseException as exc:
            failed = ctx.fail(f"{type(exc).__name__}: {exc}")
            for later in steps[i + 1 :]:
                if later.always:
                    try:
                        later.run(job, failed)
                    except Exception:
                        log.exception("step %s failed after %s raised", later.name, step.name)
            raise
    return ctx


# --- the steps ---------------------------------------------------------------------------


def check_password(job: Job, ctx: RunContext) -> RunContext:
    problem = missing_password(job.backup, job.runner.env)
    if problem is None:
        return ctx
    log.error("%s", problem)
    return ctx.fail(problem, reason=SECRET_MISSING)


def choose_containers(job: Job, ctx: RunContext) -> RunContext:
    """Where the hooks and the dump command run: the containers they name, else the
    defaults, checked against the pod's containers."""
    if not runs_commands(job.backup):
        return ctx
    pod = job.pod
    if pod is None or pod.spec is None:
        why = "not found" if pod is None else "not readable (RBAC: pods get)"
        return ctx.fail(
            f"hooks and command sources run in the sidecar's pod, which is {why}: "
            "nothing was run (POD_NAME and POD_NAMESPACE come from the downward API)",
            reason="PodUnknown",
        )
    chosen, errors = exec_containers(job.backup, pod.spec, f"pod {pod.name}")
    if errors:
        return ctx.fail("; ".join(map(str, errors)), reason="NoContainer")
    return dataclasses.replace(ctx, containers=chosen)


def _hook(job: Job, ctx: RunContext, name: str) -> tuple[RunContext, HookResult | None]:
    spec = job.backup.pre_backup if name == "preBackup" else job.backup.post_backup
    if spec is None or name not in ctx.containers:
        return ctx, None
    hook = Hook(name, spec.command, ctx.containers[name], spec.timeout, spec.on_error)
    # The post hook runs even while the sidecar stops (bounded by its timeout): it is what
    # thaws an application the pre hook froze.
    cancel = job.cancel if name == "preBackup" else None
    result = run_hook(job.pod.exec, job.pod.namespace, job.pod.name, hook, cancel=cancel)
    if result.ok:
        log.info("%s hook done in %.1fs", name, result.duration)
        return ctx, None
    text = redact(hook_message(result), job.runner.secrets)
    log.warning("%s; its output:\n%s", text, redact(result.output, job.runner.secrets))
    if not result.fails_run:
        return dataclasses.replace(ctx, warnings=(*ctx.warnings, text)), None
    return ctx, result


def pre_hook(job: Job, ctx: RunContext) -> RunContext:
    ctx, failed = _hook(job, ctx, "preBackup")
    if failed is None:
        return ctx
    return ctx.fail(redact(hook_message(failed), job.runner.secrets), reason="PreBackupHookFailed")


def post_hook(job: Job, ctx: RunContext) -> RunContext:
    ctx, failed = _hook(job, ctx, "postBackup")
    if failed is None:
        return ctx
    text = redact(hook_message(failed), job.runner.secrets)
    return dataclasses.replace(ctx, failures=(*ctx.failures, text))


def backup(job: Job, ctx: RunContext) -> RunContext:
    if job.backup.source_command is not None:
        return job.backup_command(ctx)
    return job.backup_volume(ctx)


def forget(job: Job, ctx: RunContext) -> RunContext:
    """The retention policy, by the designated pod only: `forget` (and `prune`) take an
    exclusive lock, which would fail or stall the backups of the other pods."""
    args = job.forget_args() if job.designated else None
    if args is None:
        return ctx
    result = ctx.repo.with_lock_recovery(args)
    if result.ok:
        return ctx
    prefix = f"snapshot {ctx.summary.snapshot_id} saved, but restic forget failed: "
    return job.failed(ctx, result, prefix)


def tidy_locks(job: Job, ctx: RunContext) -> RunContext:
    ctx.repo.tidy()
    return ctx


STEPS = (
    Step("preBackup", pre_hook),
    Step("backup", backup),
    Step("forget", forget),
    Step("tidy", tidy_locks),
    Step("postBackup", post_hook, always=True),
)
# Checks before anything runs: when one fails, nothing of the application was touched.
CHECKS = (Step("password", check_password), Step("containers", choose_containers))


def conclude(ctx: RunContext) -> Outcome:
    """The run's Outcome: the failure (with what failed after it), or the snapshot saved."""
    duration = time.monotonic() - ctx.started
    notes = f" ({'; '.join(ctx.warnings)})" if ctx.warnings else ""
    if ctx.failed is not None:
        message = "; ".join((ctx.failed.message, *ctx.failures)) + notes
        summary = ctx.failed.summary or ctx.summary
        return dataclasses.replace(
            ctx.failed, message=message, duration=duration, summary=summary,
            initialised=ctx.failed.initialised or ctx.initialised,
        )  # fmt: skip
    if ctx.failures:
        saved = f" (snapshot {ctx.summary.snapshot_id} saved)" if ctx.summary else ""
        return Outcome(
            success=False, message="; ".join(ctx.failures) + saved + notes, duration=duration,
            summary=ctx.summary, initialised=ctx.initialised, reason="PostBackupHookFailed",
        )  # fmt: skip
    return Outcome(
        success=True,
        message=success_message(ctx.summary, duration) + notes,
        duration=duration,
        summary=ctx.summary,
        initialised=ctx.initialised,
    )


class Job:
    """One run of a Backup: its steps, in order, with their recoveries."""

    def __init__(
        self,
        backup: Backup,
        ctx: Context,
        runner: Runner,
        *,
        stale_after: timedelta = timedelta(minutes=30),
        hostname: str | None = None,
        clock=lambda: datetime.now(UTC),
        tidy_locks: bool = False,
        designated: bool = True,
        workload: tuple[str, str] | None = None,
        pod: Pod | None = None,
    ):
        """``tidy_locks``: after a successful run, remove stale locks even where none got in
        the way (a killed run's non-exclusive lock would otherwise stay forever). For a local
        repository this costs a directory listing and is always done; for a remote one it
        costs a restic call, so the sidecar asks for it once per process. ``designated``:
        this pod runs `forget` for the workload. ``pod``: where hooks and commands run."""
        self.tidy_locks = tidy_locks
        self.designated = designated
        self.workload = workload
        self.backup = backup
        self.ctx = ctx
        self.runner = runner
        self.stale_after = stale_after
        self.hostname = hostname
        self.clock = clock
        self.pod = pod

    @property
    def cancel(self):
        """Set when the sidecar stops: hooks and dumps give up then."""
        return self.runner.stopping_event

    def run(self) -> Outcome:
        repo = Repository(self.backup, self.ctx, self.runner, stale_after=self.stale_after,
                          hostname=self.hostname, clock=self.clock,
                          tidy_locks=self.tidy_locks)  # fmt: skip
        ctx = run_steps(self, RunContext(started=time.monotonic(), repo=repo), CHECKS)
        if ctx.failed is None:
            ctx = run_steps(self, ctx, STEPS)
        return conclude(ctx)

    # --- backing up a volume ---

    def backup_volume(self, ctx: RunContext) -> RunContext:
        repo = ctx.repo
        result = repo.with_lock_recovery(restic.render_backup(self.backup, self.ctx))
        if not result.ok and not result.interrupted:
            if restic.classify(result.code, result.stderr) is Failure.NO_REPOSITORY:
                ctx = self.initialise(ctx)
                if ctx.failed is not None:
                    return ctx
                result = repo.with_lock_recovery(restic.render_backup(self.backup, self.ctx))
        summary = restic.parse_summary(result.stdout) if result.code in (0, 3) else None
        if result.interrupted and not result.ok:
            return self.failed(ctx, result, "interrupted by shutdown: ")
        if result.code == restic.EXIT_INCOMPLETE and summary is not None:
            # Snapshot saved but incomplete: report it, and keep older snapshots (no forget).
            message = f"snapshot {summary.snapshot_id} saved but incomplete: "
            message += restic.first_error_line(result.stderr, result.code)
            return ctx.fail(message, summary=summary, failure=Failure.OTHER)
        if not result.ok:
            return self.failed(ctx, result)
        if summary is None:
            return self.failed(ctx, result, "restic backup printed no summary: ")
        return self.stored(ctx, summary)

    def initialise(self, ctx: RunContext) -> RunContext:
        """`restic init`, only after restic said the repository does not exist (a missing
        config file): never on a wrong password or a network error, and never over files
        that are there, which belong to some repository."""
        repo = ctx.repo
        leftovers = repo.leftovers()
        if leftovers:
            # A count, never the names: the message becomes an Event and a status that
            # readers of the namespace see (issue 13 item 3).
            return self.refused(ctx, f"repository {repo.name} has no config but is not empty "
                                f"({leftovers} entries): not initialising over it; restore "
                                "the repository or clear the directory")  # fmt: skip
        log.info("repository %s does not exist yet: initialising", repo.name)
        init = self.runner.run(restic.render_init(self.backup, self.ctx))
        if init.ok:
            return dataclasses.replace(ctx, initialised=True)
        if "already exists" in init.stderr:  # another replica was first
            return ctx
        return self.failed(ctx, init, "restic init failed: ")

    def stored(self, ctx: RunContext, summary: restic.Summary) -> RunContext:
        if not ctx.repo.snapshot_stored(summary.snapshot_id):
            # restic 0.14 "saves" into a vanished local repository's re-created directories.
            gone = f"snapshot {summary.snapshot_id[:8]} is in no repository"
            return self.refused(ctx, f"repository {ctx.repo.name} disappeared during the run: "
                                + gone)  # fmt: skip
        return dataclasses.replace(ctx, summary=summary)

    # --- backing up a command's output ---

    def backup_command(self, ctx: RunContext) -> RunContext:
        """The command's stdout streamed into `restic backup --stdin`; a missing repository
        is initialised and a stale lock removed, then the command runs again (a dump can be
        repeated; a half-read one is never kept)."""
        deadline = time.monotonic() + self.ctx.retry_lock
        tried_init = False
        while True:
            result = self.dump(ctx.containers["command"])
            kind = restic.classify(result.restic_code or 0, result.restic_stderr)
            if result.ok or self.cancel.is_set() or not result.reason.startswith("restic"):
                break
            if kind is Failure.NO_REPOSITORY and not tried_init:
                tried_init = True
                ctx = self.initialise(ctx)
                if ctx.failed is not None:
                    return ctx
                continue
            if kind is not Failure.LOCKED or time.monotonic() >= deadline:
                break
            if not ctx.repo.clear_stale_locks() and self.runner.sleep(5.0):
                break
        if result.ok:
            return self.stored(ctx, result.summary)
        if result.reason.startswith("restic"):
            return ctx.fail(result.reason, failure=kind, interrupted=self.cancel.is_set())
        return ctx.fail(result.reason, failure=Failure.OTHER, reason="CommandFailed",
                        interrupted=self.cancel.is_set())  # fmt: skip

    def dump(self, container: str) -> StreamResult:
        source, pod = self.backup.source_command, self.pod
        timeout = source.timeout or self.runner.command_timeout
        return dump_into_restic(
            pod.exec, pod.namespace, pod.name, container, source.command,
            restic.locking_args(self.backup, self.ctx), source.filename,
            backup_options=restic.snapshot_options(self.backup, self.ctx),
            env=self.runner.env, timeout=timeout, cancel=self.cancel,
        )  # fmt: skip

    # --- forgetting ---

    def forget_args(self) -> list[str] | None:
        """`forget` for every host of the workload (the designated pod forgets for all)."""
        if self.backup.retention is None or not self.backup.retention.keeps_anything:
            return None
        kind = self.workload[0] if self.workload else None
        if kind not in PER_POD_HOST_KINDS:
            return restic.render_forget(self.backup, self.ctx)
        listed = self.runner.run(restic.render_source_snapshots(self.backup, self.ctx))
        if not listed.ok:
            log.warning(
                "cannot list snapshots (%s): forgetting only host %s this time",
                restic.first_error_line(listed.stderr, listed.code),
                self.ctx.host,
            )
            return restic.render_forget(self.backup, self.ctx)
        hosts = restic.workload_hosts(
            listed.stdout, kind, self.workload[1] if self.workload else None, self.ctx.host
        )
        return restic.render_forget(self.backup, self.ctx, hosts)

    # --- failures ---

    def refused(self, ctx: RunContext, message: str) -> RunContext:
        log.error("%s", message)
        return ctx.fail(message, failure=Failure.OTHER)

    def failed(self, ctx: RunContext, result: Result, prefix: str = "") -> RunContext:
        return ctx.fail(
            prefix + restic.first_error_line(result.stderr, result.code),
            failure=restic.classify(result.code, result.stderr),
            interrupted=result.interrupted,
        )
