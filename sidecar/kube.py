"""A thin Kubernetes API client for the sidecar: pykube's auth, raw paths, one retry policy."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykube
import requests
from tenacity import (
    retry,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
    wait_random,
)

from reconciler import __version__
from reconciler.constants import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

USER_AGENT = f"restik/{__version__}"
MERGE_PATCH = "application/merge-patch+json"
RETRYABLE_CODES = frozenset({429, 500, 502, 503, 504})


class ApiError(Exception):
    """A non-2xx answer; ``code`` is the HTTP status, ``reason`` the Status reason."""

    def __init__(self, code: int, reason: str, message: str, retry_after: float | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.code in RETRYABLE_CODES
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def _wait(retry_state) -> float:
    exc = retry_state.outcome.exception()
    if isinstance(exc, ApiError) and exc.retry_after is not None:
        return min(exc.retry_after, 10.0)
    return _backoff(retry_state)


_backoff = wait_exponential(multiplier=0.2, max=5.0) + wait_random(0, 0.2)

# One policy for every call: retry 5xx, 429 (honouring Retry-After) and connection errors.
api_retry = retry(
    retry=retry_if_exception(_retryable),
    wait=_wait,
    stop=stop_after_attempt(8) | stop_after_delay(30),
    reraise=True,
)


def load_config(kubeconfig: str | None) -> pykube.KubeConfig:
    """Explicit file, $KUBECONFIG, ~/.kube/config, else the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        return pykube.KubeConfig.from_file(path)
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return pykube.KubeConfig.from_file(str(default))
    return pykube.KubeConfig.from_service_account()


def backup_path(namespace: str, name: str = "", subresource: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class Api:
    def __init__(self, config: pykube.KubeConfig, timeout: float = 30.0):
        self.config = config
        self.http = pykube.HTTPClient(config, timeout=timeout)
        self.http.session.headers["User-Agent"] = USER_AGENT
        self.timeout = timeout

    @property
    def default_namespace(self) -> str | None:
        try:
            return self.config.namespace
        except Exception:
            return None

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        resp = self.http.session.request(method, self.http.url.rstrip("/") + path, **kwargs)
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    @api_retry
    def get(self, path: str, params: dict | None = None) -> dict:
        return self._send("GET", path, params=params).json()

    @api_retry
    def create(self, path: str, body: dict) -> dict:
        return self._send("POST", path, json=body).json()

    @api_retry
    def replace(self, path: str, body: dict) -> dict:
        return self._send("PUT", path, json=body).json()

    @api_retry
    def merge_patch(self, path: str, patch: dict) -> dict:
        data = json.dumps(patch)
        return self._send("PATCH", path, data=data, headers={"Content-Type": MERGE_PATCH}).json()

    def watch(self, path: str, params: dict, timeout: float) -> Iterator[dict]:
        """Stream watch events until the server ends the watch (``timeoutSeconds``)."""
        params = {**params, "watch": "true", "allowWatchBookmarks": "true"}
        resp = self._send("GET", path, params=params, stream=True, timeout=(10, timeout + 30))
        try:
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)
        finally:
            resp.close()


def _error(resp: requests.Response) -> ApiError:
    reason, message = resp.reason or "", resp.text[:500]
    try:
        body = resp.json()
        if isinstance(body, dict):
            reason = body.get("reason") or reason
            message = body.get("message") or message
    except ValueError:
        pass
    retry_after = None
    if resp.headers.get("Retry-After", "").strip().isdigit():
        retry_after = float(resp.headers["Retry-After"])
    return ApiError(resp.status_code, str(reason), str(message), retry_after)
