"""Run a command in a container of a pod through the API server's pods/exec, as kubectl does.

The stream is a WebSocket in Kubernetes' channel protocol (``v5.channel.k8s.io``, else
``v4.channel.k8s.io``): each binary message starts with a channel byte (0 stdin, 1 stdout,
2 stderr, 3 error: a metav1.Status with the exit code when the command ends); v5 adds
``[255, 0]``, the end of stdin, which a dump streamed into ``psql`` needs.

Client: ``websocket-client``. The two maintained choices were the ``kubernetes`` package's
``kubernetes.stream`` and ``websocket-client`` itself, which is what ``kubernetes.stream``
is built on. The ``kubernetes`` package brings the whole generated API (tens of MiB of
modules, urllib3, pyyaml, google-auth, oauthlib) next to pykube-ng, which restik already
uses for its credentials; and its ``WSClient`` buffers each channel in memory, where a dump
of a database must stream through in bounded chunks. ``websocket-client`` is small, pure
Python and dependency-free; what remains ours is the channel byte and the Status on
channel 3, which are the Kubernetes protocol itself, not WebSocket framing.

``websocket`` is imported inside ``PodExec.run`` only: an idle sidecar never execs, and
must stay within its memory budget (README, bench/), so it never loads it.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode, urlsplit

import requests

from reconciler.kube.client import RETRY, USER_AGENT, ApiError, Kube, unreachable

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255
V5, V4 = "v5.channel.k8s.io", "v4.channel.k8s.io"
CHUNK = 32 * 1024  # what kubectl sends per message
OUTPUT_LIMIT = 64 * 1024  # bytes of stderr (and of captured stdout) kept, the last ones
CLOSE_TIMEOUT = 5.0
WATCH_INTERVAL = 0.1  # how often the deadline thread looks at ``cancel``

_TELLING = re.compile(r"\b(error|fatal|failed)\b", re.IGNORECASE)

Source = bytes | BinaryIO | Iterable[bytes]
Sink = Callable[[bytes], Any] | BinaryIO


@dataclass(frozen=True)
class ExecResult:
    """How a command run through pods/exec ended."""

    command: tuple[str, ...]
    exit_code: int | None  # None: no exit status (not started, timed out, stream broken)
    error: str  # "" when the command exited 0, else why it failed, for an Event message
    stderr: str = ""  # its last OUTPUT_LIMIT bytes
    stdout: bytes = b""  # captured only when no stdout sink was given (the last bytes)
    duration: float = 0.0
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.error

    def describe(self) -> str:
        """The error with the line of stderr that says what went wrong: the last one that
        says "error", "fatal" or "failed" (a hint may follow it), else the last one."""
        if self.ok:
            return ""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if not lines:
            return self.error
        telling = [line for line in lines if _TELLING.search(line)]
        return f"{self.error}: {(telling or lines)[-1]}"


@dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate: what the WebSocket needs."""

    url: str  # http(s)://host:port
    headers: tuple[tuple[str, str], ...] = (("User-Agent", USER_AGENT),)
    sslopt: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_kube(cls, kube: Kube) -> Connection:
        """The same server, credentials and TLS settings as ``kube``'s requests."""
        client = kube.client
        url = client.url
        adapter = client.session.get_adapter(url)
        prepared = requests.Request("GET", url).prepare()
        options: dict[str, Any] = {}
        # pykube works a request's credentials out in its transport adapter (bearer token,
        # exec plugins, OIDC, client certificates, the CA): ask it, rather than re-implement
        # every kubeconfig form. tests/test_podexec.py pins this for pykube-ng 23.x.
        adapter._setup_request_auth(client.config, prepared, options)
        adapter._setup_request_certificates(client.config, prepared, options)
        headers = [("User-Agent", str(client.session.headers.get("User-Agent") or USER_AGENT))]
        if prepared.headers.get("Authorization"):
            headers.append(("Authorization", prepared.headers["Authorization"]))
        sslopt: dict[str, Any] = {}
        if urlsplit(url).scheme == "https":
            verify = options.get("verify", client.session.verify)
            if verify is False:
                sslopt.update(cert_reqs=ssl.CERT_NONE, check_hostname=False)
            else:
                sslopt["cert_reqs"] = ssl.CERT_REQUIRED
                if isinstance(verify, str):
                    sslopt["ca_certs"] = verify
            cert = options.get("cert")
            if cert:
                sslopt["certfile"], sslopt["keyfile"] = cert
            server_name = client.config.cluster.get("tls-server-name")
            if server_name:
                sslopt["server_hostname"] = server_name
        return cls(url, tuple(headers), sslopt)


class _Tail:
    """The last ``limit`` bytes of a stream, and how many came before them."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        over = len(self.data) - self.limit
        if over > 0:
            del self.data[:over]
            self.dropped += over

    def text(self) -> str:
        text = self.data.decode(errors="replace")
        return f"[{self.dropped} bytes before this left out]\n{text}" if self.dropped else text


def exit_code_of(status: dict[str, Any]) -> tuple[int | None, str]:
    """(exit code, error) from the Status on the error channel."""
    if status.get("status") == "Success":
        return 0, ""
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    code = int(cause.get("message", ""))
                except ValueError:
                    break
                return code, f"exited with code {code}"
    return None, str(status.get("message") or status.get("reason") or "failed")


def _chunks(source: Source) -> Iterable[bytes]:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
        return
    read = getattr(source, "read", None)
    if read is not None:
        while True:
            chunk = read(CHUNK)
            if not chunk:
                return
            yield chunk
    else:
        yield from source  # type: ignore[misc]


class PodExec:
    """Runs commands in pods' containers; one WebSocket per command."""

    def __init__(self, connection: Connection, *, connect_timeout: float = 30.0):
        self.connection = connection
        self.connect_timeout = connect_timeout

    @classmethod
    def from_kube(cls, kube: Kube) -> PodExec:
        return cls(Connection.from_kube(kube), connect_timeout=kube.timeout)

    def url(self, namespace: str, pod: str, container: str, command: Sequence[str],
            stdin: bool) -> str:  # fmt: skip
        base = urlsplit(self.connection.url)
        scheme = "wss" if base.scheme == "https" else "ws"
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/exec"
        query = [("container", container)] + [("command", arg) for arg in command]
        query += [("stdin", "true")] if stdin else []
        query += [("stdout", "true"), ("stderr", "true")]
        prefix = base.path.rstrip("/")
        return f"{scheme}://{base.netloc}{prefix}{path}?{urlencode(query)}"

    def _connect(self, url: str, protocols: list[str], timeout: float | None):
        # Imported here, not at the top: see the module docstring (the idle sidecar's memory).
        import websocket

        ws = websocket.WebSocket(sslopt=dict(self.connection.sslopt), skip_utf8_validation=True)
        try:
            ws.connect(
                url,
                header=[f"{k}: {v}" for k, v in self.connection.headers],
                subprotocols=protocols,
                timeout=min(self.connect_timeout, timeout) if timeout else self.connect_timeout,
                suppress_origin=True,
            )
        except websocket.WebSocketBadStatusException as exc:
            raise _api_error(exc.status_code, exc.status_message, exc.resp_body) from None
        except (OSError, websocket.WebSocketException) as exc:
            raise unreachable(self.connection.url, exc) from None
        ws.settimeout(None)  # the deadline is enforced by closing the socket, not per read
        return ws

    def run(
        self,
        namespace: str,
        pod: str,
        container: str,
        command: Sequence[str],
        *,
        stdin: Source | None = None,
        stdout: Sink | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        output_limit: int = OUTPUT_LIMIT,
    ) -> ExecResult:
        """Run ``command`` in ``container`` of ``namespace/pod`` and wait for it to end.

        ``stdin``: bytes, a binary file or an iterable of bytes, sent and then closed (the
        command sees EOF; this needs v5.channel.k8s.io, Kubernetes 1.30+). ``stdout``: a
        callable or binary file given every chunk as it arrives (when it raises, the
        command's stream is closed and the run fails); without one, the last
        ``output_limit`` bytes are kept in the result. ``timeout``: seconds for the whole
        run; then the stream is closed and the result says "timed out after Ns". A closed
        stream does not kill the command in the container (runtimes let it run on, without
        its stdin and output): commands that must not outlive it can be wrapped in
        ``timeout``. ``cancel``: once set (the sidecar is stopping), the stream is closed
        and the result says "interrupted".

        Raises ApiError when the command could not be started (pod or container missing,
        forbidden, server unreachable); retryable answers are retried first.
        """
        import websocket  # lazily, see the module docstring

        command = tuple(command)
        url = self.url(namespace, pod, container, command, stdin is not None)
        # Ending stdin needs v5: without it the command would wait for input forever.
        protocols = [V5] if stdin is not None else [V5, V4]
        started = time.monotonic()
        try:
            ws = RETRY(self._connect, url, protocols, timeout)
        except ApiError as exc:
            if stdin is not None and exc.status in (400, 403) and "protocol" in exc.message:
                raise ApiError(exc.status, exc.reason, exc.message + " (a command's input can "
                               "only be ended with v5.channel.k8s.io: Kubernetes 1.30 or "
                               "later)") from None  # fmt: skip
            raise
        protocol = ws.subprotocol or ""
        stderr, captured = _Tail(output_limit), _Tail(output_limit)
        write = None if stdout is None else getattr(stdout, "write", stdout)
        status = bytearray()
        problem: list[str] = []  # the first local failure (input, output, deadline)
        timed_out = threading.Event()

        def fail(reason: str) -> None:
            if not problem:
                problem.append(reason)
            ws.abort()

        done = threading.Event()

        def watch() -> None:
            deadline = None if timeout is None else started + timeout
            while not done.is_set():
                if cancel is not None and cancel.is_set():
                    fail("interrupted: the sidecar is stopping")
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out.set()
                    fail(f"timed out after {timeout:g}s")
                    return
                wait = WATCH_INTERVAL
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                done.wait(wait)

        def feed() -> None:
            chunks = iter(_chunks(stdin))
            while True:
                try:
                    chunk = next(chunks, None)
                except Exception as exc:  # the source failed: cut the stream, never end it
                    fail(f"could not read the input: {exc}")
                    return
                try:
                    if chunk is None:
                        ws.send_bytes(bytes([CLOSE_SIGNAL, STDIN]))
                        return
                    if chunk:
                        ws.send_bytes(bytes([STDIN]) + bytes(chunk))
                except (OSError, websocket.WebSocketException):
                    return  # the stream is closed: the reader says why

        watcher = None
        if timeout is not None or cancel is not None:
            watcher = threading.Thread(target=watch, name="exec-deadline", daemon=True)
            watcher.start()
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=feed, name="exec-stdin", daemon=True)
            feeder.start()
        try:
            while True:
                try:
                    opcode, data = ws.recv_data()
                except (OSError, websocket.WebSocketException):
                    break
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if not data:
                    continue
                channel, payload = data[0], data[1:]
                if channel == STDOUT and payload:
                    if write is None:
                        captured.add(payload)
                        continue
                    try:
                        write(payload)
                    except Exception as exc:
                        fail(f"could not pass the output on: {exc}")
                        break
                elif channel == STDERR:
                    stderr.add(payload)
                elif channel == ERROR:
                    status += payload
                elif channel == CLOSE_SIGNAL and protocol == V5:
                    continue  # the server half-closed a stream: the status still follows
        finally:
            done.set()
            try:
                ws.close(timeout=CLOSE_TIMEOUT)
            except (OSError, websocket.WebSocketException):
                pass
            ws.shutdown()
        exit_code: int | None = None
        if problem:
            error = problem[0]
        elif status:
            try:
                parsed = json.loads(bytes(status))
            except ValueError:
                parsed = {"message": bytes(status).decode(errors="replace").strip()}
            exit_code, error = exit_code_of(parsed if isinstance(parsed, dict) else {})
        else:
            error = "the stream closed before the command's exit status arrived"
        return ExecResult(
            command=command,
            exit_code=exit_code,
            error=error,
            stderr=stderr.text(),
            stdout=bytes(captured.data),
            duration=time.monotonic() - started,
            timed_out=timed_out.is_set(),
        )


def _api_error(code: int, message: str | None, body: bytes | None) -> ApiError:
    """The API server's refusal of the upgrade (a Status, as for any request)."""
    payload: dict[str, Any] = {}
    if body:
        try:
            loaded = json.loads(body)
            payload = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            payload = {"message": body.decode(errors="replace")[:300]}
    return ApiError(
        code,
        str(payload.get("reason") or message or "Error"),
        str(payload.get("message") or message or ""),
    )
