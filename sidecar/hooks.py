"""Backup hooks: commands run in a container of the pod before and after the backup
(freeze/unfreeze, flush, a checkpoint), each with a timeout and ``onError: Fail|Continue``.

The post hook runs whatever happened before it, a failed pre hook or a failed backup
included: it is what undoes the pre hook (unfreeze), so skipping it would leave the
application frozen.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from reconciler.api.hooks import CONTINUE, FAIL, ON_ERROR
from reconciler.api.hooks import HOOK_TIMEOUT as DEFAULT_TIMEOUT
from reconciler.kube.client import ApiError
from sidecar.podexec import PodExec

__all__ = ["CONTINUE", "FAIL", "Hook", "HookResult", "hook_message", "run_hook"]

HOOK_OUTPUT_LIMIT = 1024  # bytes of a hook's output kept (logged when the hook fails)
MESSAGE_OUTPUT_LIMIT = 200  # of which the end goes into the run's Event and status


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


def hook_message(result: HookResult, limit: int = MESSAGE_OUTPUT_LIMIT) -> str:
    """The reason of a failed hook for the run's Event, with the end of its output when that
    says more than the reason already does (bounded: Events are short)."""
    output = result.output.strip()
    if not output or output.splitlines()[-1].strip() in result.reason:
        return result.reason
    return f"{result.reason} (output: {_tail(output, limit)})"
