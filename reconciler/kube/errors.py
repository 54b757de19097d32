"""ApiError, the API layer's one error type: its own module so that code which must not load
pykube/requests (reconciler.kube.lean, restore-run's start) can raise and catch it too;
reconciler.kube.client re-exports it."""

from __future__ import annotations


class ApiError(Exception):
    """An error answer of the API server (or no answer at all: status 0)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None):
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        # status 0: no answer at all, so no HTTP status to show
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def not_found(self) -> bool:
        return self.status == 404
