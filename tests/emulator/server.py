"""The HTTP front of the emulator: routing, discovery, watch streams, faults, request log."""

from __future__ import annotations

import json
import logging
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import errors, podexec
from .admission import pod_admission
from .cluster import Cluster
from .disruption import evict
from .errors import ApiError
from .policy import ADMIN, CURRENT_USER, UserInfo, policy_admission, unauthorized
from .resources import STREAMED, ResourceType, api_group, resource_list
from .selectors import parse_field_selector, parse_label_selector
from .store import MERGE_PATCH, Entry, Store, _dumps
from .table import to_table, wants_table

log = logging.getLogger("tests.emulator")

READ_VERBS = {"get", "list", "watch"}
# POST-only subresources (ResourceType.actions): handler(store, ns, name, body, dry_run)
ACTIONS = {(("", "pods"), "eviction"): evict}
# subresources upgraded to a stream: handler(request handler, route, raw query, record)
STREAMS = {(("", "pods"), "exec"): podexec.serve_exec}
FAULTS = ("500", "503", "429", "drop", "slow")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it (and what it answered)."""

    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    content_type: str
    verb: str  # get list watch create update patch delete deletecollection ("" if no resource)
    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    status: int
    dry_run: bool
    fault: str | None  # 500, 503, 429, 409, drop, slow
    body: Any = field(default=None, compare=False)
    user: str = ""  # who the bearer token says made it (policy.py), "" for no token


@dataclass
class Route:
    verb: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    rt: ResourceType | None = None
    doc: Any = None  # a discovery or health answer
    error: ApiError | None = None


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


class Emulator:
    """A Kubernetes API server emulator on 127.0.0.1 (see tests/emulator/__init__.py)."""

    def __init__(
        self,
        fail_rate: float = 0.0,
        seed: int = 0,
        port: int = 0,
        history_size: int = 10000,
        bookmark_interval: float = 10.0,
        watch_timeout: tuple[float, float] = (300.0, 600.0),
        cluster: bool = False,
        controllers: bool | None = None,
        kubelet: bool | None = None,
        admission: bool | None = None,
        nodes: Sequence[str] = ("node-1", "node-2"),
        ready_delay: float = 0.05,
        broken_images: Iterable[str] = (),
        watch_window: int | None = None,
        admission_policies: bool = False,
    ):
        """``watch_window`` (or ``history_size``): watch events kept per resource; a watch
        from an older resourceVersion gets 410 Gone.

        ``cluster=True`` turns on what a cluster adds to an API server, each part also
        switchable on its own: ``controllers`` (Deployment, ReplicaSet, ReplicationController,
        StatefulSet, DaemonSet, disruption budgets), ``kubelet`` (pods bound to ``nodes``,
        Ready after ``ready_delay`` seconds unless their image is in ``broken_images`` or
        they reference a missing Secret/ConfigMap), ``admission`` (Pod Security ``enforce``
        labels, ResourceQuota).

        ``admission_policies=True`` enforces the ValidatingAdmissionPolicies stored in the
        emulator, with a real CEL (policy.py); ``write_kubeconfig(..., user=...)`` says who
        asks."""
        self.store = Store(watch_window if watch_window is not None else history_size)
        self.fail_rate = fail_rate
        self.seed = seed
        self.rng = random.Random(seed)
        self.bookmark_interval = bookmark_interval
        self.watch_timeout = watch_timeout
        # Seconds each write from a restik client waits before it is served: widens the
        # window between two writes, e.g. to kill a controller between two patches.
        self.write_delay = 0.0
        # pods/exec runs the command as a local process, as the kubelet would in the
        # container: (namespace, pod, container) -> {"cwd", "env", "user", "group"}
        self.exec_env: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._exec_processes: set[subprocess.Popen] = set()
        self._requests: list[Request] = []
        self.tokens: dict[str, UserInfo] = {}  # bearer token -> user (write_kubeconfig)
        self._log_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        pick = lambda flag: cluster if flag is None else flag  # noqa: E731
        if pick(admission):
            self.store.admission.append(pod_admission(self.store))
        if admission_policies:
            self.store.validating.append(policy_admission(self.store))
        self.cluster: Cluster | None = None
        if pick(controllers) or pick(kubelet):
            self.cluster = Cluster(self.store, controllers=pick(controllers),
                                   kubelet=pick(kubelet), nodes=nodes, ready_delay=ready_delay,
                                   broken_images=broken_images)  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Emulator:
        emu = self

        class Handler(_Handler):
            emulator = emu

        httpd = _Server(("127.0.0.1", self._port), Handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        if self.cluster is not None:
            self.cluster.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        if self.cluster is not None:
            self.cluster.stop()
        with self.store.cond:
            self.store.stopped = True
            self.store.cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._log_lock:
            procs = list(self._exec_processes)
            self._exec_processes.clear()
        for proc in procs:  # exec'd commands still running (a client that left does not
            podexec.kill(proc)  # stop them, in a real cluster either)
        with self._log_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=1)
        self._httpd = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "emulator not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(
        self,
        path: str | Path,
        namespace: str = "default",
        user: str | None = None,
        groups: Sequence[str] = (),
    ) -> Path:
        """A kubeconfig for this emulator; with ``user``, it holds a bearer token that the
        emulator maps to that user (and ``groups``, plus system:authenticated), e.g.
        ``system:serviceaccount:restik-system:restik``. Without, requests are the admin's."""
        credentials: dict[str, Any] = {}
        if user is not None:
            token = secrets.token_hex(16)
            self.tokens[token] = UserInfo(user, (*groups, "system:authenticated"))
            credentials["token"] = token
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": credentials}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
            "preferences": {},
        }
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        tmp.replace(path)
        return path

    # -- waiting for the emulated cluster ------------------------------------------------------

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Poll ``predicate`` (each time the store changes, at least every 20 ms) until it
        returns something truthy, and return that; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.store.cond:
                rv = self.store.rv
            value = predicate()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            if self.cluster is not None and self.cluster.error is not None:
                raise RuntimeError("emulated cluster failed") from self.cluster.error
            with self.store.cond:
                if self.store.rv == rv:
                    self.store.cond.wait(min(left, 0.02))

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the emulated cluster has nothing left to do for the current state:
        a controller pass changes nothing and no pod is still starting."""
        if self.cluster is not None:
            self.cluster.settle(timeout)

    # -- direct store access for tests (no faults, not logged) -----------------------------

    def _type(self, api_version: str, kind_or_plural: str) -> ResourceType:
        return self.store.find_type(api_version, kind_or_plural)

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def create(self, obj: dict[str, Any], keep_status: bool = True) -> dict[str, Any]:
        """Create like POST; unlike POST, a given .status is kept (to seed test state)."""
        rt = self._type(obj["apiVersion"], obj["kind"])
        ns = self._ns(rt, (obj.get("metadata") or {}).get("namespace"))
        return self.store.create(rt, ns, obj, keep_status=keep_status)

    def get(
        self, api_version: str, kind_or_plural: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        rt = self._type(api_version, kind_or_plural)
        with self.store.lock:
            entry = self.store.lookup(rt, self._ns(rt, namespace), name)
        return json.loads(entry.json(rt)) if entry else None

    def list(
        self,
        api_version: str,
        kind_or_plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rt = self._type(api_version, kind_or_plural)
        match = _matcher(rt, label_selector, field_selector)
        items, *_ = self.store.list(rt, namespace if rt.namespaced else None, match)
        return [json.loads(e.json(rt)) for e in items]

    @property
    def resource_version(self) -> int:
        """The store's current resourceVersion: a starting point for history()."""
        with self.store.lock:
            return self.store.rv

    def history(
        self,
        api_version: str,
        kind_or_plural: str,
        since: int,
        namespace: str | None = None,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Every change of a kind after resourceVersion ``since``, oldest first, as
        (ADDED|MODIFIED|DELETED, object): to check what held at every step (e.g. how many
        pods were Ready throughout a rollout), not only at the end. Raises 410 (ApiError)
        when the history no longer reaches back that far."""
        rt = self._type(api_version, kind_or_plural)
        with self.store.lock:
            events = self.store.events_after(since, rt.key)
        return [
            (e.type, json.loads(e.entry.json(rt)))
            for e in events
            if namespace is None or e.entry.namespace == namespace
        ]

    def update(self, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        """Update like PUT; without metadata.resourceVersion, unconditionally."""
        rt = self._type(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        ns = self._ns(rt, meta.get("namespace"))
        with self.store.lock:
            if not meta.get("resourceVersion"):
                current = self.store.get(rt, ns, meta["name"])
                obj = {**obj, "metadata": {**meta, **_rv(current)}}
            return self.store.update(rt, ns, meta["name"], obj, subresource)

    def patch(
        self,
        api_version: str,
        kind_or_plural: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        rt = self._type(api_version, kind_or_plural)
        ns = self._ns(rt, namespace)
        return self.store.patch(rt, ns, name, content_type, patch, subresource)

    def delete(
        self, api_version: str, kind_or_plural: str, name: str, namespace: str | None = None
    ) -> bool:
        """Delete (with garbage collection); False if it did not exist."""
        rt = self._type(api_version, kind_or_plural)
        try:
            self.store.delete(rt, self._ns(rt, namespace), name)
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def load(self, path: str | Path, create_namespaces: bool = False) -> list[dict[str, Any]]:
        """Create every object of a YAML/JSON manifest file (multi-document, v1 Lists).

        ``create_namespaces``: create a missing namespace first, as a convenience for
        trying things out (the API itself answers 404 for a missing namespace).
        """
        from ruamel.yaml import YAML

        created = []
        docs = list(YAML(typ="safe").load_all(Path(path).read_text()))
        while docs:
            doc = docs.pop(0)
            if not doc:
                continue
            if doc.get("kind", "").endswith("List") and "items" in doc:
                docs[:0] = doc["items"]
                continue
            ns = (doc.get("metadata") or {}).get("namespace")
            if create_namespaces and ns and self.get("v1", "namespaces", ns) is None:
                self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            created.append(self.create(doc))
        return created

    # -- exec'd processes ---------------------------------------------------------------------

    @property
    def exec_processes(self) -> list[subprocess.Popen]:
        """Commands started through pods/exec that are still running."""
        with self._log_lock:
            return [p for p in self._exec_processes if p.poll() is None]

    def _exec_started(self, proc: subprocess.Popen) -> None:
        with self._log_lock:
            self._exec_processes.add(proc)

    def _exec_ended(self, proc: subprocess.Popen) -> None:
        with self._log_lock:
            self._exec_processes.discard(proc)

    # -- request log -------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        with self._log_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.verb and r.verb not in READ_VERBS]

    def _record(self, request: Request) -> None:
        with self._log_lock:
            self._requests.append(request)
        log.info(
            "%s %s%s -> %s%s",
            request.method,
            request.path,
            "?" + "&".join(f"{k}={v}" for k, v in request.query.items()) if request.query else "",
            request.status,
            f" (fault {request.fault})" if request.fault else "",
        )

    def _draw_fault(self, user_agent: str, write: bool) -> tuple[str | None, float]:
        """(fault, delay for "slow"), drawn from the seeded generator for restik clients only."""
        if not user_agent.startswith("restik") or self.fail_rate <= 0:
            return None, 0.0
        with self._log_lock:
            if self.rng.random() >= self.fail_rate:
                return None, 0.0
            fault = self.rng.choice((*FAULTS, "409") if write else FAULTS)
            return fault, self.rng.uniform(0.5, 1.5) if fault == "slow" else 0.0


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that went away mid-answer (killed, timed out) is normal, not a fault.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def _rv(entry: Entry) -> dict[str, str]:
    return {"resourceVersion": entry.obj["metadata"]["resourceVersion"]}


def _matcher(rt: ResourceType, label_selector: str | None, field_selector: str | None):
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, rt.fields)
    if labels and fields:
        return lambda obj: labels(obj) and fields(obj)
    return labels or fields


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # one response, no 40 ms delayed-ACK stalls
    server_version = "restik-emulator"
    sys_version = ""
    emulator: Emulator

    # -- plumbing ----------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        with self.emulator._log_lock:
            self.emulator._connections.add(self.connection)

    def finish(self) -> None:
        with self.emulator._log_lock:
            self.emulator._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _send(self, code: int, body: str | bytes, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- one request ---------------------------------------------------------------------------

    def _serve(self) -> None:
        emu = self.emulator
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        raw = self._read_body()
        user_agent = self.headers.get("User-Agent") or ""
        content_type = _media_type(self.headers.get("Content-Type"))
        authorization = self.headers.get("Authorization") or ""
        token = authorization[7:].strip() if authorization.startswith("Bearer ") else None
        user = emu.tokens.get(token) if token is not None else None
        route = self._route(url.path, query)
        dry_run = query.get("dryRun") == "All"
        fault, delay = emu._draw_fault(
            user_agent, self.command in ("POST", "PUT", "PATCH", "DELETE")
        )
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")

        def record(status: int, fault_name: str | None = fault) -> None:
            emu._record(
                Request(
                    self.command, url.path, query, user_agent, content_type, route.verb,
                    route.group, route.version, route.resource, route.subresource,
                    route.namespace, route.name, status, dry_run, fault_name, body,
                    user.username if user else "",
                )
            )  # fmt: skip

        if fault == "drop":
            record(0)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if (
            emu.write_delay
            and user_agent.startswith("restik")
            and self.command in ("POST", "PUT", "PATCH", "DELETE")
        ):
            time.sleep(emu.write_delay)
        if fault == "slow":
            time.sleep(delay)
        elif fault is not None:
            error = {
                "500": ApiError(500, "InternalError", "Internal error occurred: injected fault",
                                {"causes": [{"message": "injected fault"}]}),
                "503": ApiError(503, "ServiceUnavailable",
                                "the server is currently unable to handle the request", {}),
                "429": ApiError(429, "TooManyRequests",
                                "the server has received too many requests and has asked us to "
                                "try again later", {"retryAfterSeconds": 1},
                                headers={"Retry-After": "1"}),
                "409": errors.conflict(route.group, route.resource, route.name or ""),
            }[fault]  # fmt: skip
            record(error.code)
            self._send(error.code, _dumps(error.status()), error.headers)
            return
        try:
            if token is not None and user is None:
                raise unauthorized()
            # one thread serves a connection's requests one after another: set it every time
            CURRENT_USER.set(user or ADMIN)
            if route.error is not None:
                raise route.error
            if route.doc is not None:
                record(200)
                if isinstance(route.doc, str):
                    self._send(200, route.doc, {"Content-Type": "text/plain; charset=utf-8"})
                else:
                    self._send(200, _dumps(route.doc))
                return
            if query.get("dryRun") not in (None, "All"):
                raise errors.bad_request(f"Invalid dry run value: {query['dryRun']}")
            if route.verb == "watch":
                self._watch(route, query, record)
                return
            if route.rt is not None and (route.rt.key, route.subresource) in STREAMS:
                emu.store._admit("CONNECT", route.rt, route.namespace, route.name,
                                 route.subresource, None, None, False)  # fmt: skip
                STREAMS[(route.rt.key, route.subresource)](self, route, url.query, record)
                return
            code, payload = self._dispatch(route, query, raw, content_type)
        except ApiError as exc:
            record(exc.code)
            self._send(exc.code, _dumps(exc.status()), exc.headers)
            return
        except Exception as exc:
            log.exception("emulator failure on %s %s", self.command, self.path)
            error = ApiError(500, "InternalError", f"Internal error occurred: {exc}", {})
            record(500)
            self._send(500, _dumps(error.status()))
            return
        record(code)
        self._send(code, payload)

    # -- routing ---------------------------------------------------------------------------------

    def _route(self, path: str, query: dict[str, str]) -> Route:
        store = self.emulator.store
        segs = [unquote(s) for s in path.split("/") if s]
        route = Route()
        if not segs:
            route.doc = {"paths": ["/api", "/api/v1", "/apis", "/healthz", "/readyz", "/version"]}
            return route
        head = segs[0]
        if head in ("healthz", "readyz", "livez") and len(segs) == 1:
            route.doc = "ok"
            return route
        if head == "version" and len(segs) == 1:
            route.doc = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-restik-emulator",
                         "gitCommit": "0000000000000000000000000000000000000000",
                         "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                         "goVersion": "go1.24", "compiler": "gc",
                         "platform": "linux/amd64"}  # fmt: skip
            return route
        with store.lock:
            versions = store.group_versions()
            if head == "api":
                if len(segs) == 1:
                    route.doc = {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                 "serverAddress": f"127.0.0.1:{self.emulator.port}"}]}  # fmt: skip
                    return route
                group, version, rest = "", segs[1], segs[2:]
            elif head == "apis":
                if len(segs) == 1:
                    groups = [api_group(g, v) for g, v in versions.items() if g]
                    route.doc = {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
                    return route
                if segs[1] not in versions or not segs[1]:
                    route.error = errors.no_route()
                    return route
                if len(segs) == 2:
                    route.doc = {"kind": "APIGroup", "apiVersion": "v1",
                                 **api_group(segs[1], versions[segs[1]])}  # fmt: skip
                    return route
                group, version, rest = segs[1], segs[2], segs[3:]
            else:
                route.error = errors.no_route()
                return route
            route.group, route.version = group, version
            if version not in versions.get(group, []):
                route.error = errors.no_route()
                return route
            if not rest:
                gv = f"{group}/{version}" if group else version
                route.doc = resource_list(
                    gv,
                    [
                        rt
                        for rt in store.types.values()
                        if (rt.group, rt.version) == (group, version)
                    ],
                )
                return route
            watch = False
            if rest[0] == "watch":
                watch, rest = True, rest[1:]
            if (
                len(rest) >= 3
                and rest[0] == "namespaces"
                and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
            ):
                route.namespace, rest = rest[1], rest[2:]
            if not rest or len(rest) > 3:
                route.error = errors.no_route()
                return route
            route.resource = rest[0]
            route.name = rest[1] if len(rest) > 1 else ""
            route.subresource = rest[2] if len(rest) > 2 else ""
            rt = store.resolve(group, version, route.resource)
        action = rt is not None and route.subresource in {a[0] for a in rt.actions}
        if (
            rt is None
            or (route.namespace and not rt.namespaced)
            or (
                route.subresource
                and not (route.subresource == "status" and rt.status)
                and not action
            )
        ):
            route.error = errors.no_route()
            return route
        route.rt = rt
        method = self.command
        if action:
            verb = "create" if method == "POST" and not watch else None
            if method == "GET" and not watch and route.subresource in STREAMED:
                verb = "get"  # a WebSocket upgrade is a GET
        elif route.name:
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            if watch or query.get("watch") in ("true", "1"):
                verb = "watch"
        else:
            verb = {"POST": "create", "DELETE": "deletecollection"}.get(method)
            if method == "GET":
                verb = "watch" if watch or query.get("watch") in ("true", "1") else "list"
        if verb is None or (
            route.subresource and not action and verb not in ("get", "update", "patch")
        ):
            route.error = errors.method_not_allowed(method)
        elif rt.namespaced and not route.namespace and verb not in ("list", "watch"):
            route.error = errors.no_route() if route.name else errors.method_not_allowed(method)
        route.verb = verb or ""
        return route

    # -- verbs -----------------------------------------------------------------------------------

    def _decode(self, raw: bytes, content_type: str) -> Any:
        if content_type in ("application/yaml", "application/x-yaml"):
            from ruamel.yaml import YAML

            try:
                return YAML(typ="safe").load(raw.decode())
            except Exception as exc:
                raise errors.bad_request(f"error decoding YAML: {exc}") from None
        if content_type not in ("", "application/json", "*/*") and not content_type.endswith(
            "+json"
        ):
            raise errors.unsupported_media_type(
                content_type, ["application/json", "application/yaml"]
            )
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise errors.bad_request(
                f"couldn't get version/kind; json parse error: {exc}"
            ) from None

    def _dispatch(
        self, route: Route, query: dict[str, str], raw: bytes, content_type: str
    ) -> tuple[int, str]:
        store = self.emulator.store
        rt = route.rt
        assert rt is not None
        ns = route.namespace
        dry_run = query.get("dryRun") == "All"
        sub = route.subresource or None
        table = wants_table(self.headers.get("Accept"))
        if route.verb == "get":
            entry = store.get(rt, ns, route.name)
            if table:
                rv = entry.obj["metadata"]["resourceVersion"]
                return 200, self._table(rt, [entry], table, rv, query)
            return 200, entry.json(rt)
        if route.verb == "list":
            match = _matcher(rt, query.get("labelSelector"), query.get("fieldSelector"))
            try:
                limit = int(query.get("limit") or 0)
            except ValueError:
                raise errors.bad_request("invalid limit") from None
            items, rv, token, remaining = store.list(
                rt, ns or None, match, limit, query.get("continue")
            )
            if table:
                return 200, self._table(rt, items, table, str(rv), query, token)
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if token:
                meta["continue"] = token
                meta["remainingItemCount"] = remaining
            head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
            return 200, head[:-1] + ',"items":[' + ",".join(e.item_json(rt) for e in items) + "]}"
        if route.subresource and route.verb == "create":
            handler = ACTIONS[(rt.key, route.subresource)]
            body = self._decode(raw, content_type)
            store._admit("CREATE", rt, ns, route.name, route.subresource, body, None, dry_run)
            return handler(store, ns, route.name, body, dry_run)
        if route.verb == "create":
            obj = store.create(rt, ns, self._decode(raw, content_type), dry_run)
            return 201, _dumps(obj)
        if route.verb == "update":
            obj = store.update(rt, ns, route.name, self._decode(raw, content_type), sub, dry_run)
            return 200, _dumps({**obj, "apiVersion": rt.api_version})
        if route.verb == "patch":
            try:
                patch = json.loads(raw or b"null")
            except ValueError as exc:
                raise errors.bad_request(f"error decoding patch: {exc}") from None
            obj = store.patch(rt, ns, route.name, content_type, patch, sub, dry_run)
            return 200, _dumps({**obj, "apiVersion": rt.api_version})
        options = self._decode(raw, content_type) if raw else {}
        options = options if isinstance(options, dict) else {}
        propagation = query.get("propagationPolicy") or options.get("propagationPolicy")
        if route.verb == "delete":
            obj, done = store.delete(
                rt, ns, route.name, dry_run, propagation, options.get("preconditions")
            )
            if not done:
                return 202, _dumps(obj)
            if rt.return_deleted:
                return 200, _dumps({**obj, "apiVersion": rt.api_version})
            details = {"name": route.name, "group": rt.group, "kind": rt.plural,
                       "uid": obj["metadata"]["uid"]}  # fmt: skip
            if not rt.group:
                del details["group"]
            status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": details}  # fmt: skip
            return 200, _dumps(status)
        # deletecollection
        match = _matcher(rt, query.get("labelSelector"), query.get("fieldSelector"))
        with store.lock:
            items, rv, _, _ = store.list(rt, ns or None, match)
            deleted = []
            for entry in items:
                if store.lookup(rt, entry.namespace, entry.name) is entry:
                    obj, _ = store.delete(rt, entry.namespace, entry.name, dry_run, propagation)
                    deleted.append(_dumps(obj))
            rv = store.rv
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version,
                       "metadata": {"resourceVersion": str(rv)}})  # fmt: skip
        return 200, head[:-1] + ',"items":[' + ",".join(deleted) + "]}"

    @staticmethod
    def _table(
        rt: ResourceType,
        entries: list[Entry],
        version: str,
        rv: str,
        query: dict[str, str],
        token: str | None = None,
    ) -> str:
        include = query.get("includeObject") or "Metadata"
        if include not in ("None", "Metadata", "Object"):
            raise errors.bad_request(f"invalid includeObject {include!r}")
        objects = [json.loads(e.json(rt)) for e in entries]
        return _dumps(to_table(rt, objects, version, rv, include, time.time(), token))

    # -- watch -----------------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _watch(self, route: Route, query: dict[str, str], record) -> None:
        """A chunked stream of the store's watch: the handler only encodes what it yields."""
        emu = self.emulator
        rt = route.rt
        assert rt is not None
        match = _matcher(rt, query.get("labelSelector"), query.get("fieldSelector"))
        try:
            timeout = float(query["timeoutSeconds"]) if "timeoutSeconds" in query else None
        except ValueError:
            raise errors.bad_request("invalid timeoutSeconds") from None
        if timeout is None:
            timeout = random.uniform(*emu.watch_timeout)
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        stream = emu.store.watch(
            rt,
            route.namespace if rt.namespaced else "",
            match,
            query.get("resourceVersion") or "",
            deadline=time.monotonic() + timeout,
            name=route.name,
            bookmark_interval=emu.bookmark_interval if bookmarks else None,
        )
        record(200)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        table = wants_table(self.headers.get("Accept"))
        first = True
        try:
            for kind, item in stream:
                if kind == "ERROR":
                    self._chunk(_dumps({"type": "ERROR", "object": item.status()}).encode() + b"\n")
                elif kind == "BOOKMARK":
                    self._chunk(self._bookmark(rt, item))
                elif table:  # a one-row Table per event, the columns only in the first one
                    rv = item.obj["metadata"]["resourceVersion"]
                    obj = json.loads(self._table(rt, [item], table, rv, query))
                    if not first:
                        obj["columnDefinitions"] = []
                    first = False
                    self._chunk((_dumps({"type": kind, "object": obj}) + "\n").encode())
                else:
                    self._chunk(self._event(kind, item, rt))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True
            return
        if emu.store.stopped:
            self.close_connection = True

    @staticmethod
    def _event(kind: str, entry: Entry, rt: ResourceType) -> bytes:
        return ('{"type":"' + kind + '","object":' + entry.json(rt) + "}\n").encode()

    @staticmethod
    def _bookmark(rt: ResourceType, rv: int) -> bytes:
        obj = {"kind": rt.kind, "apiVersion": rt.api_version,
               "metadata": {"resourceVersion": str(rv)}}  # fmt: skip
        return (_dumps({"type": "BOOKMARK", "object": obj}) + "\n").encode()
