"""`restik restore-run --into-pods SELECTOR`: a dump Restore's Job. For a Backup whose
``backupSource.command`` streamed a dump into restic, it pipes `restic dump` of each target
pod's snapshot into the Restore's ``spec.command`` (``psql``), run in the pod through the
exec subresource (sidecar/stream.py), and reports as the volume restore does: status.hosts
per host, the phase, Events RestoreStarted/Succeeded/Failed (sidecar/restore.py's Executor,
whose steps it reuses).

Targets (reconciler/controller/dumptargets.py): every pod of a StatefulSet (its ordinal's
snapshot) or DaemonSet (its node's), one Ready pod of the other kinds. Hosts go one after
the other; the first failure ends the Restore Failed (the rest is not touched)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping

from reconciler.api.backup import Backup
from reconciler.api.hooks import exec_containers
from reconciler.api.restore import Restore
from reconciler.controller.dumptargets import DumpTarget, dump_targets
from reconciler.kube.client import ApiError
from reconciler.kube.events import clip, rfc3339, with_condition
from reconciler.kube.resource import PODS
from sidecar import restic
from sidecar.follow import one_line
from sidecar.podexec import PodExec
from sidecar.restore import Executor
from sidecar.restore_restic import FAILURE_REASONS, Progress, RestoreFailed, restore_context
from sidecar.snapshots import NoSnapshot, Snapshot, choose_snapshot
from sidecar.stream import StreamResult, restore_from_restic

log = logging.getLogger("restik.restore")


def dump_progress(snapshot: Snapshot) -> Progress | None:
    """The figures of a whole dump piped in: one file, the snapshot's size (what the
    backup read from the dump command), or None when the snapshot does not record it."""
    if snapshot.size is None:
        return None
    return Progress(
        percent=1.0,
        total_files=1,
        files_restored=1,
        total_bytes=snapshot.size,
        bytes_restored=snapshot.size,
        done=True,
    )


def stream_failure(result: StreamResult, interrupted: bool) -> RestoreFailed:
    """The condition's reason for a failed stream: restic's failure kind, the command's."""
    if interrupted:
        return RestoreFailed("Interrupted", f"interrupted (SIGTERM): {result.reason}")
    if result.reason.startswith("restic"):
        kind = restic.classify(result.restic_code or 1, result.restic_stderr)
        return RestoreFailed(FAILURE_REASONS.get(kind, "ResticFailed"), result.reason)
    return RestoreFailed("CommandFailed", result.reason)


def choose_container(restore: Restore, backup: Backup, target: DumpTarget) -> str:
    """spec.command.container, else the Backup's backupSource.command.container, else the
    pod's first container (restik's own never): as the backup chose it."""
    named = restore.command.container if restore.command else None
    source = dataclasses.replace(
        backup.source_command, container=named or backup.source_command.container
    )
    probe = dataclasses.replace(backup, source_command=source, pre_backup=None, post_backup=None)
    chosen, errors = exec_containers(probe, target.spec, f"pod {target.pod}")
    if errors:
        path = "spec.command.container" if named else errors[0].path
        raise RestoreFailed("NoContainer", f"{path}: {errors[0].message}")
    return chosen["command"]


class DumpExecutor(Executor):
    """One dump Restore, every target pod, once. ``run()`` (the Executor's): 0 restored
    (or before), 1 failed."""

    # Executor.run reads and checks the Restore, waits for the Backup, then calls these.

    def _target_host(self, restore: Restore) -> str:
        return restore.workload_name or restore.name  # the hosts come with the pods

    def _shares_host(self, restore: Restore) -> bool:
        return False  # one Job restores every host, once: no Lease among replicas

    def _restore(self, raw: Mapping, restore: Restore, backup: Backup, target_host: str) -> int:
        if restore.command is None or backup.source_command is None:
            what = "has no spec.command" if restore.command is None else "backs up a volume"
            failed = RestoreFailed(
                "Invalid",
                f"restore-run --into-pods restores a dump into a workload's pods: Restore "
                f"{self.namespace}/{restore.name} with Backup {backup.name}: it {what}",
            )
            return self._fail_early(raw, restore, failed)
        try:
            listed = self.kube.list(PODS.path(self.namespace), label_selector=self.s.into_pods)
        except ApiError as exc:
            return self._fail_early(raw, restore, RestoreFailed("Error", f"listing pods: {exc}"))
        targets = dump_targets(
            restore.workload_kind, restore.workload_name, listed.get("items") or []
        )
        if not targets:
            why = f"no Ready pod of {restore.target} (pods {self.s.into_pods}) to restore into"
            return self._fail_early(raw, restore, RestoreFailed("NoPod", why))
        snapshots: list[Snapshot] | None = None
        for target in targets:
            code, snapshots = self._restore_pod(raw, restore, backup, target, snapshots)
            if code != 0:
                return code
        if restore.multi_host:
            self._complete(restore, targets)
        return 0

    def _fail_early(self, raw: Mapping, restore: Restore, failure: RestoreFailed) -> int:
        """Failed before any pod: one entry for the workload's name as host."""
        host = restore.workload_name or restore.name
        started = self.clock()
        source = restore.source_host(host)
        return self.status.finish(raw, restore, host, source, started, None, None, failure)

    def _restore_pod(
        self,
        raw: Mapping,
        restore: Restore,
        backup: Backup,
        target: DumpTarget,
        snapshots: list[Snapshot] | None,
    ) -> tuple[int, list[Snapshot] | None]:
        started = self.clock()
        self.status.pod = target.pod  # status.hosts[].pod: where the dump went
        host, source_host = target.host, restore.source_host(target.host)
        snapshot = progress = None
        self.status.begin(restore, host, source_host, started)
        end = functools.partial(self.status.finish, raw, restore, host, source_host, started)
        try:
            if not target.ready:
                raise RestoreFailed(
                    "PodNotReady",
                    f"pod {target.pod} is not Ready: the dump needs the application running",
                )
            container = choose_container(restore, backup, target)
            ctx, env = restore_context(backup, host, self.s.restic, self.s.cache_dir, self.env)
            if snapshots is None:
                snapshots = self._snapshots(backup, ctx, env)
            try:
                snapshot = choose_snapshot(snapshots, restore, source_host, backup.snapshot_path)
            except NoSnapshot as exc:
                raise RestoreFailed(exc.reason, str(exc)) from None
            command = " ".join(restore.command.command)
            self.status.event(
                raw,
                "RestoreStarted",
                f"host {host}: piping snapshot {snapshot.short_id} of {source_host} "
                f"({rfc3339(snapshot.time)}) into `{command}` in {target.pod}/{container}",
            )
            log.info("piping snapshot %s into %s/%s", snapshot.short_id, target.pod, container)
            result = restore_from_restic(
                PodExec.from_kube(self.kube),
                self.namespace,
                target.pod,
                container,
                restore.command.command,
                restic.locking_args(backup, ctx),
                snapshot.id,
                backup.source_command.filename,
                env=env,
                timeout=restore.command.timeout,
                cancel=self._stop,
            )
            if not result.ok:
                raise stream_failure(result, self._stop.is_set())
            progress = dump_progress(snapshot)
        except RestoreFailed as exc:
            code = end(snapshot, None, exc)
            return code, snapshots
        except Exception as exc:  # an API or OS error: still a Failed Restore, never silent
            log.exception("restore failed")
            failed = RestoreFailed("Error", f"{type(exc).__name__}: {one_line(exc)}")
            code = end(snapshot, None, failed)
            return code, snapshots
        code = end(snapshot, progress, None)
        return code, snapshots

    def _complete(self, restore: Restore, targets: list[DumpTarget]) -> None:
        """Every host of a StatefulSet or DaemonSet restored: the Restore Succeeded (the
        volume restore leaves that to the controller, which sees all the pods' entries; here
        one Job did them all)."""
        now = self.clock()
        hosts = [t.host for t in targets]
        message = f"restored {len(hosts)} hosts: {', '.join(hosts)}"

        def change(status: dict) -> dict:
            return {
                "phase": "Succeeded",
                "completionTime": rfc3339(now),
                "runID": restore.run_id,
                "snapshot": f"{len(hosts)} hosts",
                "message": clip(message),
                "conditions": with_condition(status, "Failed", "False", "Restored", message, now),
            }

        self.status.update(change)
