"""Backup hooks: commands run in a container of the pod before and after the backup
(freeze/unfreeze, flush, a checkpoint), each with a timeout and ``onError: Fail|Continue``.

The post hook runs whatever happened before it, a failed pre hook or a failed backup
included: it is what undoes the pre hook (unfreeze), so skipping it would leave the
application frozen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from reconciler.kube.client import ApiError
from sidecar.podexec import PodExec

FAIL, CONTINUE = "Fail", "Continue"
ON_ERROR = (FAIL, CONTINUE)
DEFAULT_TIMEOUT = 60.0
HOOK_OUTPUT_LIMIT = 1024  # bytes of a hook's output kept for the run's Event and status


@dataclass(frozen=True)
class Hook:
    """One hook as the Backup declares it (``spec.hooks.preBackup`` / ``postBackup``)."""

    name: str  # "preBackup" or "postBackup", for messages
    command: tuple[str, ...]
    container: str
    timeout: float = DEFAULT_TIMEOUT
    on_error: str = FAIL

    def __post_init__(self) -> None:
        if not self.command:
            raise ValueError(f"{self.name}: command must not be empty")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"{self.name}: onError must be one of {', '.join(ON_ERROR)}")
        if self.timeout <= 0:
            raise ValueError(f"{self.name}: timeout must be positive")


@dataclass(frozen=True)
class HookResult:
    hook: Hook
    ok: bool
    reason: str  # "" when ok, else why: "preBackup hook failed: exited with code 1: ..."
    output: str  # the last HOOK_OUTPUT_LIMIT bytes of its stdout and stderr
    duration: float
    timed_out: bool = False

    @property
    def fails_run(self) -> bool:
        return not self.ok and self.hook.on_error == FAIL


def _tail(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return "…" + data[-limit:].decode(errors="ignore")


def run_hook(
    exec_client: PodExec,
    namespace: str,
    pod: str,
    hook: Hook,
    *,
    cancel: threading.Event | None = None,
    output_limit: int = HOOK_OUTPUT_LIMIT,
) -> HookResult:
    """Run one hook to its end or its timeout; never raises for the hook's own failures."""
    started = time.monotonic()
    try:
        result = exec_client.run(namespace, pod, hook.container, hook.command,
                                 timeout=hook.timeout, cancel=cancel,
                                 output_limit=output_limit)  # fmt: skip
    except ApiError as exc:
        return HookResult(hook, False, f"{hook.name} hook could not run in {pod}/"
                          f"{hook.container}: {exc}", "", time.monotonic() - started)  # fmt: skip
    parts = (result.stdout.decode(errors="replace").strip(), result.stderr.strip())
    output = _tail("\n".join(p for p in parts if p), output_limit)
    reason = "" if result.ok else f"{hook.name} hook failed: {result.describe()}"
    return HookResult(hook, result.ok, reason, output, result.duration, result.timed_out)


class StepResult(Protocol):
    """What the main step (the backup) returns: whether it worked, and if not why."""

    @property
    def ok(self) -> bool: ...

    @property
    def reason(self) -> str: ...


T = TypeVar("T", bound=StepResult)


@dataclass(frozen=True)
class HookedRun(Generic[T]):
    """A run of pre hook → main step → post hook."""

    ok: bool
    reason: str  # the failures that fail the run, first one first
    pre: HookResult | None
    main: T | None  # None when a failed pre hook (onError: Fail) kept it from running
    post: HookResult | None
    warnings: tuple[str, ...] = ()  # failures of hooks with onError: Continue

    @property
    def hooks(self) -> tuple[HookResult, ...]:
        return tuple(h for h in (self.pre, self.post) if h is not None)


def run_with_hooks(
    exec_client: PodExec,
    namespace: str,
    pod: str,
    main: Callable[[], T],
    *,
    pre: Hook | None = None,
    post: Hook | None = None,
    cancel: threading.Event | None = None,
) -> HookedRun[T]:
    """pre → main → post. A failing pre hook with onError Fail skips main; post always runs
    (also when main raised, which is re-raised after it). A failing hook with onError
    Fail fails the run; with Continue it is a warning."""
    pre_result = run_hook(exec_client, namespace, pod, pre, cancel=cancel) if pre else None
    main_result: T | None = None
    try:
        if pre_result is None or not pre_result.fails_run:
            main_result = main()
    finally:
        post_result = run_hook(exec_client, namespace, pod, post, cancel=cancel) if post else None
    failures: list[str] = []
    warnings: list[str] = []
    if pre_result is not None and not pre_result.ok:
        (failures if pre_result.fails_run else warnings).append(pre_result.reason)
    if main_result is not None and not main_result.ok:
        failures.append(main_result.reason)
    if post_result is not None and not post_result.ok:
        (failures if post_result.fails_run else warnings).append(post_result.reason)
    return HookedRun(
        ok=not failures,
        reason="; ".join(failures),
        pre=pre_result,
        main=main_result,
        post=post_result,
        warnings=tuple(warnings),
    )


def describe(run: HookedRun, success: str) -> str:
    """The Event message of a hooked run: ``success`` or the failures, then warnings."""
    text = success if run.ok else run.reason
    if run.warnings:
        text += " (" + "; ".join(run.warnings) + ")"
    return text
