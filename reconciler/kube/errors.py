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


def error_answer(
    status: int, http_reason: str | None, payload, body_text: str, retry_after: str | None
) -> ApiError:
    """The ApiError of an error answer (status >= 400): its Status object's reason and
    message (``payload``, the decoded body, anything when it was not JSON), else the HTTP
    reason and the body's start; ``retry_after``: the Retry-After header, if any."""
    seconds = None
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = None
    if not isinstance(payload, dict):
        payload = {}
    reason = payload.get("reason") or http_reason or "Error"
    message = payload.get("message") or body_text[:300]
    return ApiError(status, reason, message, seconds)
