"""A thin Kubernetes API layer over pykube (new-pykube): paths, retries, classified errors."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pykube
import requests
import tenacity

from reconciler import __version__
from reconciler.kube.errors import (
    ApiError,  # defined there, imported from here too
    error_answer,
)
from reconciler.kube.resource import PODS

log = logging.getLogger(__name__)
USER_AGENT = f"restik/{__version__}"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
RETRY_ATTEMPTS = 5
MAX_RETRY_WAIT = 10.0


def _wait(retry_state: tenacity.RetryCallState) -> float:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(exc, ApiError) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_WAIT)
    base = min(0.2 * 2 ** (retry_state.attempt_number - 1), MAX_RETRY_WAIT)
    return base * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    log.debug("retrying after %s (attempt %d)", exc, retry_state.attempt_number)


# The one retry policy: 5xx, 429 (honouring Retry-After) and connection errors.
RETRY = tenacity.Retrying(
    retry=tenacity.retry_if_exception(lambda e: isinstance(e, ApiError) and e.retryable),
    stop=tenacity.stop_after_attempt(RETRY_ATTEMPTS),
    wait=_wait,
    before_sleep=_log_retry,
    reraise=True,
)


# Evictions: a 429 is a PodDisruptionBudget saying "not now", an answer, not a fault to retry.
EVICT_RETRY = RETRY.copy(
    retry=tenacity.retry_if_exception(
        lambda e: isinstance(e, ApiError) and e.retryable and e.status != 429
    )
)


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ConfigError(Exception):
    """No usable Kubernetes configuration; the message says where restik looked."""


# pykube reads these at connect and at every request: another API host for the in-cluster
# token, another CA to trust. restik never sets them; in a pod they can only come from the
# environment someone else wrote (e.g. a Secret's keys), so they are dropped, not obeyed.
PYKUBE_OVERRIDES = (
    "PYKUBE_KUBERNETES_SERVICE_HOST",
    "PYKUBE_KUBERNETES_SERVICE_PORT",
    "PYKUBE_SSL_CERTIFICATE_AUTHORITY",
)


def drop_pykube_overrides() -> list[str]:
    """Remove every PYKUBE_* variable from the environment; the names removed (no values)."""
    names = sorted(k for k in os.environ if k.startswith("PYKUBE_"))
    for name in names:
        del os.environ[name]
    if names:
        log.warning("ignoring %s: restik does not take API settings from PYKUBE_*", names)
    return names


def load_config(kubeconfig: str | None) -> pykube.KubeConfig:
    """--kubeconfig, then $KUBECONFIG, then ~/.kube/config, then the in-cluster account."""
    drop_pykube_overrides()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        origin = "--kubeconfig" if kubeconfig else "$KUBECONFIG"
        if not Path(path).expanduser().is_file():
            raise ConfigError(f"{origin} names {path}, which does not exist")
        return pykube.KubeConfig.from_file(str(Path(path).expanduser()))
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return pykube.KubeConfig.from_file(str(default))
    if not (SERVICE_ACCOUNT_DIR / "token").is_file():
        raise ConfigError(
            "no Kubernetes configuration found: no --kubeconfig, $KUBECONFIG is not set, "
            f"{default} does not exist, and there is no in-cluster service account "
            f"({SERVICE_ACCOUNT_DIR}/token)"
        )
    return pykube.KubeConfig.from_service_account(str(SERVICE_ACCOUNT_DIR))


def unreachable(url: str, exc: Exception) -> ApiError:
    """A connection failure as an ApiError that names the server and the cause."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        cause = errno.group(1).strip()
    elif isinstance(exc, requests.Timeout) or "timed out" in text:
        cause = "timed out"
    else:
        cause = text.splitlines()[0][:200] if text else type(exc).__name__
    return ApiError(0, "ConnectionError", f"cannot reach the API server at {url}: {cause}")


@dataclass
class Kube:
    """API calls by path; every call goes through the retry policy and raises ApiError."""

    client: pykube.HTTPClient
    timeout: float = 30.0

    @classmethod
    def connect(cls, kubeconfig: str | None = None, timeout: float = 30.0) -> Kube:
        client = pykube.HTTPClient(load_config(kubeconfig), timeout=timeout)
        client.session.headers["User-Agent"] = USER_AGENT
        return cls(client, timeout)

    @property
    def default_namespace(self) -> str | None:
        """The namespace of the kubeconfig's context (or the service account's), if any."""
        try:
            return self.client.config.namespace
        except Exception:
            return None

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping | None = None,
        body: object = None,
        content_type: str = "application/json",
    ) -> dict:
        return RETRY(self._request_once, method, path, params, body, content_type)

    def _request_once(self, method, path, params, body, content_type, lazy=False) -> dict:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        try:
            resp = self.client.session.request(
                method,
                self.client.url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise unreachable(self.client.url, exc) from None
        if lazy and resp.status_code < 400 and resp.content:
            return decode_listing(resp.content, path)
        return _decode(resp)

    def get(self, path: str, **params) -> dict:
        return self.request("GET", path, params=params or None)

    def get_or_none(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self,
        path: str,
        label_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        *,
        field_selector: str | None = None,
        lazy: bool = False,
    ) -> dict:
        """One LIST request (a page when ``limit`` is set). ``lazy``: its ``items`` are a
        ListItems, decoded one by one as they are iterated (see decode_listing)."""
        params = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        if lazy:
            return RETRY(self._request_once, "GET", path, params or None, None, "", True)
        return self.request("GET", path, params=params or None)

    def list_pages(
        self,
        path: str,
        label_selector: str | None = None,
        limit: int = 500,
        *,
        field_selector: str | None = None,
    ) -> Iterator[tuple[str, list[dict]]]:
        """(list resourceVersion, items) per page, as client-go's pager reads a LIST: the
        server answers in pieces, and a caller can process and drop each before the next.
        Each page's items are a ListItems: iterate them once, each decoded as it comes."""
        first = self.list(path, label_selector, limit, field_selector=field_selector, lazy=True)
        yield from continued(
            self, path, label_selector, limit, first, field_selector=field_selector
        )

    def evict(self, namespace: str, name: str) -> bool:
        """Evict a pod through the Eviction API (policy/v1), so PodDisruptionBudgets hold:
        True when evicted (201), False when a budget says wait (429). Other errors raise."""
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        }
        path = PODS.path(namespace, name, "eviction")
        try:
            EVICT_RETRY(self._request_once, "POST", path, None, body, "application/json")
        except ApiError as exc:
            if exc.status == 429:
                return False
            raise
        return True

    def create(self, path: str, body: Mapping) -> dict:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: Mapping) -> dict:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, patch: Mapping, dry_run: bool = False) -> dict:
        params = {"dryRun": "All"} if dry_run else None
        return self.request("PATCH", path, params=params, body=patch, content_type=MERGE_PATCH)

    def delete(self, path: str, body: Mapping | None = None) -> dict:
        return self.request("DELETE", path, body=body)

    def watch(
        self,
        path: str,
        resource_version: str,
        label_selector: str | None,
        timeout_s: int,
        *,
        params: Mapping | None = None,
    ) -> Iterator[dict]:
        """Stream watch events; ends on the server's timeout. Not retried: callers resume."""
        params = {
            **(params or {}),
            "watch": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_s),
            "allowWatchBookmarks": "true",
        }
        if label_selector:
            params["labelSelector"] = label_selector
        try:
            resp = self.client.session.get(
                self.client.url + path, params=params, stream=True, timeout=(10, timeout_s + 10)
            )
        except requests.RequestException as exc:
            raise unreachable(self.client.url, exc) from None
        if resp.status_code >= 400:
            _decode(resp)
        try:
            for line in resp.iter_lines():
                if line:
                    yield json.loads(line)
        except (requests.RequestException, ValueError) as exc:
            raise unreachable(self.client.url, exc) from None
        finally:
            resp.close()


def continued(
    kube,
    path: str,
    label_selector: str | None,
    limit: int,
    listing: dict,
    *,
    field_selector: str | None = None,
) -> Iterator[tuple[str, list[dict]]]:
    """(list resourceVersion, items) of a LIST's first page, already read (``listing``), then
    of each page after it: Kube.list_pages for a caller that asked for the first page
    earlier (e.g. one request ahead, while it processed another LIST). Every page is asked
    for with the first one's selectors, as the API server requires of a continue token; the
    pages after a lazy one (ListItems, from ``Kube.list(..., lazy=True)``) are asked for lazy
    as well."""
    while True:
        meta = listing.get("metadata") or {}
        items = listing.get("items")
        lazy = isinstance(items, ListItems)
        yield meta.get("resourceVersion", ""), items if lazy else items or []
        del listing, items  # a page is dropped before the next is read
        token = meta.get("continue")
        if not token:
            return
        more = {"field_selector": field_selector} if field_selector else {}
        if lazy:
            more["lazy"] = True
        listing = kube.list(path, label_selector, limit, token, **more)


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class ListItems:
    """A LIST answer's ``items``, decoded one at a time while they are iterated, so that a
    page never holds all its decoded objects at once (500 workloads with their sidecars are
    ~60 MiB of dicts and strings against ~4 MiB of JSON): each one can be planned, slimmed
    or dropped before the next is decoded. Iterable once; the text is released at the end.
    Decoding is json's own, item by item (what json.loads would give for each)."""

    def __init__(self, text: str, start: int, path: str):
        self._text: str | None = text
        self._start = start  # the index just after the array's "["
        self._path = path

    def __iter__(self) -> Iterator[dict]:
        text = self._text
        if text is None:
            raise RuntimeError(f"the items of LIST {self._path} were iterated already")
        self._text = None
        return self._items(text)

    def decoded(self) -> list:
        """All the items at once, in one pass of json's decoder (as json.loads would give
        them: the keys' strings shared by every item of the page), for a caller that keeps
        them all anyway."""
        text = self._text
        if text is None:
            raise RuntimeError(f"the items of LIST {self._path} were iterated already")
        self._text = None
        try:
            items, pos = _loads_at(text, self._start - 1)
            _rest_of_object(text, pos, {})
        except ValueError as exc:
            raise ApiError(
                200, "InvalidResponse", f"the answer to LIST {self._path} is not JSON: {exc}"
            ) from None
        return items

    def with_texts(self) -> Iterator[tuple[dict, str]]:
        """(item, its JSON text) for each item, for a caller that keeps the text only."""
        text = self._text
        if text is None:
            raise RuntimeError(f"the items of LIST {self._path} were iterated already")
        self._text = None
        pos = self._start
        for item, end in self._items(text, ends=True):
            start = _WHITESPACE.match(text, pos).end()
            start += text.startswith(",", start)
            start = _WHITESPACE.match(text, start).end()
            yield item, text[start:end]
            pos = end

    def _items(self, text: str, ends: bool = False) -> Iterator:
        try:
            pos = _WHITESPACE.match(text, self._start).end()
            if text.startswith("]", pos):
                pos += 1
            else:
                while True:
                    enabled = gc.isenabled()
                    gc.disable()  # as _loads: decoding makes no cycles
                    try:
                        item, pos = _DECODER.raw_decode(text, pos)
                    finally:
                        if enabled:
                            gc.enable()
                    yield (item, pos) if ends else item
                    del item
                    pos = _WHITESPACE.match(text, pos).end()
                    if text.startswith(",", pos):
                        pos = _WHITESPACE.match(text, pos + 1).end()
                    elif text.startswith("]", pos):
                        pos += 1
                        break
                    else:
                        raise json.JSONDecodeError("expected ',' or ']'", text, pos)
            _rest_of_object(text, pos, {})  # the keys after items: checked, not needed
        except ValueError as exc:
            raise ApiError(
                200, "InvalidResponse", f"the answer to LIST {self._path} is not JSON: {exc}"
            ) from None


class JsonObjects(Mapping):
    """Objects kept as their (compact) JSON text and decoded again at each read: for what a
    cycle keeps of every Backup's Role and RoleBinding until its reconcilers read it (once),
    a third to a fifth of the memory of the decoded dicts. Each read is a new object."""

    def __init__(self, objects: Mapping | None = None):
        self._texts: dict = {}
        for key, obj in (objects or {}).items():
            self.keep(key, json.dumps(obj, separators=(",", ":")))

    def keep(self, key, text: str) -> None:
        self._texts[key] = text

    def __getitem__(self, key) -> dict:
        return _loads_at(self._texts[key], 0)[0]

    def __contains__(self, key) -> bool:
        return key in self._texts

    def __iter__(self):
        return iter(self._texts)

    def __len__(self) -> int:
        return len(self._texts)

    def __repr__(self) -> str:
        return f"JsonObjects({len(self)} objects)"


def decode_listing(body: bytes, path: str = "") -> dict:
    """A LIST answer with its ``items`` left undecoded (a ListItems) when they come after its
    ``metadata``, as the API server writes them (Go's field order: kind, apiVersion,
    metadata, items); otherwise everything decoded as json.loads would. Broken JSON gives {},
    as _decode does for any answer."""
    try:
        text = body.decode(json.detect_encoding(body))
        pos = _WHITESPACE.match(text).end()
        if not text.startswith("{", pos):
            return {}
        out: dict = {}
        pos = _WHITESPACE.match(text, pos + 1).end()
        if text.startswith("}", pos):
            return out if not text[pos + 1 :].strip(" \t\n\r") else {}
        while True:
            key, pos = _DECODER.raw_decode(text, pos)
            if not isinstance(key, str):
                return {}
            pos = _WHITESPACE.match(text, pos).end()
            if not text.startswith(":", pos):
                return {}
            pos = _WHITESPACE.match(text, pos + 1).end()
            if key == "items" and "metadata" in out and text.startswith("[", pos):
                out["items"] = ListItems(text, pos + 1, path)
                return out
            out[key], pos = _loads_at(text, pos)
            pos = _WHITESPACE.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WHITESPACE.match(text, pos + 1).end()
                continue
            if text.startswith("}", pos) and not text[pos + 1 :].strip(" \t\n\r"):
                return out
            return {}
    except ValueError:  # UnicodeDecodeError included
        return {}


def _loads_at(text: str, pos: int) -> tuple[object, int]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _DECODER.raw_decode(text, pos)
    finally:
        if enabled:
            gc.enable()


def _rest_of_object(text: str, pos: int, out: dict) -> dict:
    """The members of an object from just after a value to its end (``, "k": v ... }``) and
    nothing but whitespace after it; ValueError if that is not what the text holds."""
    while True:
        pos = _WHITESPACE.match(text, pos).end()
        if text.startswith("}", pos):
            if text[pos + 1 :].strip(" \t\n\r"):
                raise json.JSONDecodeError("extra data", text, pos + 1)
            return out
        if not text.startswith(",", pos):
            raise json.JSONDecodeError("expected ',' or '}'", text, pos)
        pos = _WHITESPACE.match(text, pos + 1).end()
        key, pos = _DECODER.raw_decode(text, pos)
        if not isinstance(key, str):
            raise json.JSONDecodeError("expected a key", text, pos)
        pos = _WHITESPACE.match(text, pos).end()
        if not text.startswith(":", pos):
            raise json.JSONDecodeError("expected ':'", text, pos)
        out[key], pos = _DECODER.raw_decode(text, _WHITESPACE.match(text, pos + 1).end())


def _loads(body: bytes):
    """JSON from bytes (resp.json() would first decode a text copy of a large LIST), with
    the cyclic garbage collector paused: parsing creates no cycles, and at 10,000 workloads
    the collections it would trigger walk every live object again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return json.loads(body)
    finally:
        if enabled:
            gc.enable()


def _decode(resp: requests.Response) -> dict:
    try:
        payload = _loads(resp.content) if resp.content else {}
    except ValueError:
        payload = {}
    if resp.status_code < 400:
        return payload
    raise error_answer(
        resp.status_code, resp.reason, payload, resp.text[:300], resp.headers.get("Retry-After")
    )
