"""A small stdlib-only API client (http.client, ssl, json) for a short-lived process:
`restik restore-run` reads its Restore, Backup and claim with it before restic starts, and
for the default restore writes its status and Events with it too, so that it never imports
pykube/requests (0.2 s of CPU at the start, taken from restic while it restores).

It reads the configurations restik's pods and tests use, found as reconciler.kube.client
finds them (--kubeconfig, $KUBECONFIG, ~/.kube/config, the in-cluster service account): a
cluster `server` (http or https, with `certificate-authority[-data]` or
`insecure-skip-tls-verify`) and a user with a bearer `token`/`tokenFile`, a client
certificate, or nothing. Anything else (exec plugins, auth providers, basic auth) raises
Unsupported, and the caller uses reconciler.kube.client for everything. Its calls are the
ones reconciler.kube.client.Kube offers under the same names (get, get_or_none, create,
merge_patch), with the same retries (5xx, 429 honouring Retry-After, no answer) and the
same ApiError."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler import __version__
from reconciler.kube.errors import ApiError, error_answer

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = f"restik/{__version__}"
# the user fields this reader understands; any other one (exec, auth-provider, username,
# password, impersonation, ...) means the configuration needs the full client
KNOWN_USER_FIELDS = {
    "token",
    "tokenFile",
    "client-certificate",
    "client-certificate-data",
    "client-key",
    "client-key-data",
}


class Unsupported(Exception):
    """The configuration needs more than this reader does: use reconciler.kube.client."""


# as reconciler.kube.client.RETRY: attempts, and the longest wait between two
RETRY_ATTEMPTS = 5
MAX_RETRY_WAIT = 10.0
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class LeanConfig:
    server: str
    namespace: str | None = None
    token: str | None = None
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None


def load_config(kubeconfig: str | None, environ=None) -> LeanConfig:
    """As reconciler.kube.client.load_config looks: --kubeconfig, $KUBECONFIG,
    ~/.kube/config, then the in-cluster service account. Unsupported when nothing there
    is readable by this reader (the full client then says what is wrong)."""
    environ = os.environ if environ is None else environ
    path = kubeconfig or environ.get("KUBECONFIG")
    if path:
        return from_file(Path(path).expanduser())
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return from_file(default)
    return from_service_account(SERVICE_ACCOUNT_DIR, environ)


def from_service_account(directory: Path, environ) -> LeanConfig:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    token_file = directory / "token"
    if not host or not port or not token_file.is_file():
        raise Unsupported("no in-cluster service account")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    namespace_file = directory / "namespace"
    return LeanConfig(
        server=f"https://{host}:{port}",
        namespace=namespace_file.read_text().strip() if namespace_file.is_file() else None,
        token=token_file.read_text().strip(),
        ca_file=str(directory / "ca.crt"),
    )


def _load_document(text: str):
    try:
        return json.loads(text)  # what the emulator writes; JSON is YAML
    except ValueError:
        pass
    import yaml  # only for a YAML kubeconfig; the C loader when built with it

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506


def _named(items, name) -> dict:
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise Unsupported(f"kubeconfig names {name!r}, which it does not define")


def from_file(path: Path) -> LeanConfig:
    if not path.is_file():
        raise Unsupported(f"{path} does not exist")
    doc = _load_document(path.read_text())
    if not isinstance(doc, dict):
        raise Unsupported(f"{path} is not a kubeconfig")
    context = _named(doc.get("contexts"), doc.get("current-context")).get("context") or {}
    cluster = _named(doc.get("clusters"), context.get("cluster")).get("cluster") or {}
    user = {}
    if context.get("user"):
        user = _named(doc.get("users"), context.get("user")).get("user") or {}
    unknown = set(user) - KNOWN_USER_FIELDS
    if unknown or cluster.get("proxy-url") or cluster.get("tls-server-name"):
        raise Unsupported(f"kubeconfig needs {sorted(unknown) or 'a proxy or server name'}")
    base = path.parent

    def file_of(value) -> str | None:
        return str(base / value) if value else None  # relative to the kubeconfig, as kubectl

    def data_of(value) -> bytes | None:
        return base64.b64decode(value) if value else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(file_of(user["tokenFile"])).read_text().strip()
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise Unsupported("kubeconfig cluster has no server")
    ca_data = data_of(cluster.get("certificate-authority-data"))
    return LeanConfig(
        server=server.rstrip("/"),
        namespace=context.get("namespace") or None,
        token=token or None,
        ca_file=file_of(cluster.get("certificate-authority")),
        ca_data=ca_data.decode() if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        cert_file=file_of(user.get("client-certificate")),
        key_file=file_of(user.get("client-key")),
        cert_data=data_of(user.get("client-certificate-data")),
        key_data=data_of(user.get("client-key-data")),
    )


def _tls(config: LeanConfig) -> ssl.SSLContext:
    if config.insecure:
        context = ssl._create_unverified_context()  # noqa: S323 - the kubeconfig asks for it
    else:
        context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
    cert, key = config.cert_file, config.key_file
    if config.cert_data or config.key_data:
        # ssl reads a certificate chain from files only: write them, load, remove at once
        with tempfile.TemporaryDirectory(prefix="restik-cert-") as tmp:
            cert = cert or _write(Path(tmp) / "cert.pem", config.cert_data)
            key = key or _write(Path(tmp) / "key.pem", config.key_data)
            context.load_cert_chain(cert, key)
    elif cert:
        context.load_cert_chain(cert, key)
    return context


def _write(path: Path, data: bytes | None) -> str | None:
    if data is None:
        return None
    path.touch(mode=0o600)
    path.write_bytes(data)
    return str(path)


class LeanKube:
    """API calls by path over one kept-alive connection (one call at a time)."""

    def __init__(self, config: LeanConfig, timeout: float = 30.0):
        self.config = config
        url = urlsplit(config.server)
        self.url = config.server
        self.prefix = url.path.rstrip("/")
        if url.scheme == "https":
            self.conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                url.hostname, url.port, timeout=timeout, context=_tls(config)
            )
        elif url.scheme == "http":
            self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        else:
            raise Unsupported(f"server {config.server!r}: not http(s)")
        self.headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if config.token:
            self.headers["Authorization"] = f"Bearer {config.token}"
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, kubeconfig: str | None = None, environ=None) -> LeanKube:
        """Unsupported when the configuration needs the full client."""
        try:
            return cls(load_config(kubeconfig, environ))
        except (OSError, ValueError, ssl.SSLError, KeyError, TypeError) as exc:
            raise Unsupported(f"{type(exc).__name__}: {exc}") from None

    @property
    def default_namespace(self) -> str | None:
        return self.config.namespace

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content_type: str = "application/json",
    ) -> dict:
        for attempt in range(1, RETRY_ATTEMPTS + 1):
            try:
                return self._request_once(method, path, body, content_type)
            except ApiError as exc:
                if not exc.retryable or attempt == RETRY_ATTEMPTS:
                    raise
                wait = min(0.2 * 2 ** (attempt - 1), MAX_RETRY_WAIT)
                wait *= 0.5 + random.random() / 2  # noqa: S311 - jitter, not crypto
                if exc.retry_after is not None:
                    wait = min(exc.retry_after, MAX_RETRY_WAIT)
                time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _request_once(self, method: str, path: str, body: object, content_type: str) -> dict:
        headers = dict(self.headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        with self._lock:
            try:
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()  # the next request connects again
                cause = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                raise ApiError(
                    0, "ConnectionError", f"cannot reach the API server at {self.url}: {cause}"
                ) from None
        try:
            decoded = json.loads(payload) if payload else {}
        except ValueError:
            decoded = {}
        if resp.status < 400:
            if not isinstance(decoded, dict):
                raise ApiError(resp.status, "BadResponse", f"{method} {path}: not an object")
            return decoded
        text = payload[:300].decode(errors="replace")
        raise error_answer(resp.status, resp.reason, decoded, text, resp.getheader("Retry-After"))

    def get(self, path: str) -> dict:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> dict | None:
        try:
            return self.get(path)
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def create(self, path: str, body: Mapping) -> dict:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, patch: Mapping) -> dict:
        return self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)

    def close(self) -> None:
        self.conn.close()
