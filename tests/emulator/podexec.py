"""pods/exec as the API server and a kubelet serve it: a WebSocket in the Kubernetes channel
protocol (``v5.channel.k8s.io``, ``v4.channel.k8s.io``) whose command runs as a local process.

The protocol (client-go tools/remotecommand, kubelet cri/streaming): every binary message
starts with one channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. Once the
connection is up, the server sends one empty message on the lowest channel it writes
(stdout, else stderr, else error) to say so. When the command ends, the error channel
carries a metav1.Status as JSON (``Success``, or ``Failure`` with reason
``NonZeroExitCode`` and the exit code as the message of the cause of reason ``ExitCode``,
or ``InternalError`` when the runtime could not start the command), then the server
closes the WebSocket. v5 adds one control message from the client: ``[255, channel]``
half-closes that channel, i.e. ``[255, 0]`` is the end of stdin.

What a kubelet does and this emulator copies: the command runs with the container's
working directory, environment and user (``Emulator.exec_env[(ns, pod, container)]``:
``{"cwd": ..., "env": {...}, "user": ..., "group": ...}``; without an entry, as the
emulator's own process). What a real runtime does NOT do, and so neither does this: kill
the command when the client goes away (runc's exec keeps running; opencontainers/runc#3359).
The command only loses its stdin (EOF) and its stdout/stderr (SIGPIPE on the next write);
commands still running when the emulator stops are killed then.

WebSocket framing is wsproto's (sans-IO, over the request handler's socket).
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import ProtocolError, RemoteProtocolError

from . import errors

if TYPE_CHECKING:
    from .server import Route, _Handler

log = logging.getLogger("tests.emulator.exec")

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_SIGNAL = 255  # v5: [255, channel] half-closes a channel
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")  # served, in no particular order
CHUNK = 32 * 1024
CLOSE_WAIT = 5.0  # seconds to wait for the client's answer to our close frame
POLL = 0.05  # how often an idle output pump looks whether the client left


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _container_names(spec: dict[str, Any], key: str) -> list[str]:
    return [c.get("name", "") for c in spec.get(key) or []]


def resolve_container(pod: dict[str, Any], name: str, container: str) -> str:
    """The container to exec in, as the API server picks and checks it (pod/strategy.go)."""
    spec = pod.get("spec") or {}
    containers = _container_names(spec, "containers")
    if not container:
        if len(containers) == 1:
            return containers[0]
        if not containers:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        text = (
            f"a container name must be specified for pod {name}, "
            f"choose one of: [{' '.join(containers)}]"
        )
        inits = _container_names(spec, "initContainers")
        if inits:
            text += f" or one of the init containers: [{' '.join(inits)}]"
        raise errors.bad_request(text)
    known = (
        containers
        + _container_names(spec, "initContainers")
        + _container_names(spec, "ephemeralContainers")
    )
    if container not in known:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    if not spec.get("nodeName"):
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    status = pod.get("status") or {}
    statuses = (
        (status.get("containerStatuses") or [])
        + (status.get("initContainerStatuses") or [])
        + (status.get("ephemeralContainerStatuses") or [])
    )
    state = next((s.get("state") or {} for s in statuses if s.get("name") == container), {})
    if "running" not in state:
        # what the kubelet answers for a container without a running process
        raise errors.bad_request(
            f'unable to upgrade connection: container not found ("{container}")'
        )
    return container


def exit_status(command: list[str], code: int) -> dict[str, Any]:
    """The metav1.Status a kubelet writes on the error channel when the command ended."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: "
        f"command '{' '.join(command)}' exited with {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def start_failure(command: list[str], exc: OSError) -> dict[str, Any]:
    """The Status for a command the runtime could not start (missing binary, no permission)."""
    why = (
        "executable file not found in $PATH" if isinstance(exc, FileNotFoundError) else exc.strerror
    )
    cause = (
        "error executing command in container: failed to exec in container: failed to start "
        f"exec: OCI runtime exec failed: exec failed: unable to start container process: exec: "
        f'"{command[0]}": {why}: unknown'
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


def serve_exec(handler: _Handler, route: Route, raw_query: str, record) -> None:
    """Answer one pods/exec request on ``handler``'s connection (errors as ApiError)."""
    emu = handler.emulator
    params = parse_qs(raw_query, keep_blank_values=True)
    last = {k: v[-1] for k, v in params.items()}
    command = params.get("command") or []
    rt = route.rt
    assert rt is not None
    with emu.store.lock:
        pod = emu.store.get(rt, route.namespace, route.name).copy()
    container = resolve_container(pod, route.name, last.get("container", ""))
    want = {ch: _true(last.get(key)) for ch, key in ((STDIN, "stdin"), (STDOUT, "stdout"),
                                                      (STDERR, "stderr"))}  # fmt: skip
    if not any(want.values()):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if _true(last.get("tty")):
        raise errors.bad_request("this emulator runs commands without a terminal (tty=true)")
    if not command or not command[0]:
        raise errors.bad_request("you must specify at least one command for the container")
    upgrade = (handler.headers.get("Upgrade") or "").lower()
    if upgrade != "websocket":
        raise errors.bad_request(
            "Upgrade request required"
            if not upgrade
            else f"this emulator serves exec over WebSocket only, not {upgrade}"
        )

    ws = WSConnection(ConnectionType.SERVER)
    head = handler.requestline + "\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in handler.headers.items()) + "\r\n"
    try:
        ws.receive_data(head.encode("latin-1"))
        request = next((e for e in ws.events() if isinstance(e, Request)), None)
    except RemoteProtocolError as exc:
        raise errors.bad_request(f"bad WebSocket handshake: {exc}") from None
    if request is None:
        raise errors.bad_request("bad WebSocket handshake")
    protocol = next((p for p in request.subprotocols if p in PROTOCOLS), None)
    if protocol is None:
        raise errors.bad_request(
            f"requested protocol(s) are not supported: {request.subprotocols}; "
            f"supports {list(PROTOCOLS)}"
        )
    settings = emu.exec_env.get((route.namespace, route.name, container)) or {}
    session = _Session(handler, ws, command, want, settings)
    record(101)
    handler.close_connection = True
    try:
        session.run(protocol)
    except Exception:  # after the upgrade there is no HTTP answer left to give
        log.exception("exec session on %s failed", handler.path)
        session._abort()


class _Session:
    """One upgraded exec connection: the process, its pumps and the WebSocket."""

    def __init__(self, handler: _Handler, ws: WSConnection, command: list[str],
                 want: dict[int, bool], settings: dict[str, Any]):  # fmt: skip
        self.handler = handler
        self.emulator = handler.emulator
        self.ws = ws
        self.command = command
        self.want = want
        self.settings = settings
        self.sock = handler.connection
        self.lock = threading.Lock()  # wsproto state and socket writes
        self.gone = threading.Event()  # the client went away (or the socket broke)
        self.closing = threading.Event()  # we sent our close frame
        self.proc: subprocess.Popen | None = None

    # -- output ----------------------------------------------------------------------------

    def _write(self, event: Any) -> bool:
        with self.lock:
            if self.gone.is_set():
                return False
            try:
                self.sock.sendall(self.ws.send(event))
            except (OSError, ProtocolError, ValueError):
                self.gone.set()
                return False
        return True

    def send(self, channel: int, data: bytes) -> bool:
        return self._write(BytesMessage(data=bytes([channel]) + data))

    # -- the process -----------------------------------------------------------------------

    def _env(self) -> dict[str, str] | None:
        env = self.settings.get("env")
        if env is None:
            return None
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}

    def _start(self) -> OSError | None:
        pipe = subprocess.PIPE
        try:
            self.proc = subprocess.Popen(
                self.command,
                stdin=pipe if self.want[STDIN] else subprocess.DEVNULL,
                stdout=pipe if self.want[STDOUT] else subprocess.DEVNULL,
                stderr=pipe if self.want[STDERR] else subprocess.DEVNULL,
                cwd=self.settings.get("cwd"),
                env=self._env(),
                user=self.settings.get("user"),
                group=self.settings.get("group"),
                start_new_session=True,
            )
        except OSError as exc:
            return exc
        self.emulator._exec_started(self.proc)
        return None

    def _pump(self, channel: int, pipe) -> None:
        """Copy one output pipe of the process to its channel until EOF or the client left."""
        fd = pipe.fileno()
        try:
            while not self.gone.is_set():
                ready, _, _ = select.select([fd], [], [], POLL)
                if not ready:
                    continue
                data = os.read(fd, CHUNK)
                if not data or not self.send(channel, data):
                    return
        except OSError:
            return
        finally:
            pipe.close()  # the process gets SIGPIPE on its next write, as in a container

    def _finish(self, pumps: list[threading.Thread], failed: OSError | None) -> None:
        """Once the command ended and its output is sent: the status, then our close frame."""
        if failed is not None:
            status = start_failure(self.command, failed)
        else:
            assert self.proc is not None
            for pump in pumps:
                pump.join()
            code = self.proc.wait()
            self.emulator._exec_ended(self.proc)
            if code < 0:  # killed by a signal: runtimes report 128 + signal, as a shell does
                code = 128 - code
            status = exit_status(self.command, code)
        self.send(ERROR, json.dumps(status, separators=(",", ":")).encode())
        self.closing.set()
        self._write(CloseConnection(code=1000))
        # a client that never answers our close frame is cut off
        if not self.gone.wait(CLOSE_WAIT):
            self._abort()

    def _abort(self) -> None:
        self.gone.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- input -----------------------------------------------------------------------------

    def _stdin(self, data: bytes) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.closed:
            return
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (OSError, ValueError):  # the process closed its stdin or exited
            pass

    def _close_stdin(self) -> None:
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass

    def _message(self, protocol: str, data: bytes) -> None:
        if not data:
            return
        channel, payload = data[0], data[1:]
        if channel == CLOSE_SIGNAL and protocol.startswith("v5."):
            if payload[:1] == bytes([STDIN]):
                self._close_stdin()
            return
        if channel == STDIN:
            self._stdin(payload)
        # resize (4) means nothing without a tty; other channels are not read by a kubelet

    def _read(self, protocol: str) -> None:
        """Read the client's messages until it closes the WebSocket or goes away."""
        rfile = self.handler.rfile
        message = bytearray()
        while not self.gone.is_set():
            try:
                data = rfile.read1(CHUNK)
            except (OSError, ValueError):
                data = b""
            with self.lock:
                replies = b""
                inbound: list[bytes] = []
                done = False
                try:
                    self.ws.receive_data(data or None)
                    for event in self.ws.events():
                        if isinstance(event, BytesMessage | TextMessage):
                            chunk = event.data
                            message += chunk if isinstance(chunk, bytes) else chunk.encode()
                            if event.message_finished:
                                inbound.append(bytes(message))
                                message.clear()
                        elif isinstance(event, Ping):
                            replies += self.ws.send(event.response())
                        elif isinstance(event, CloseConnection):
                            if self.ws.state is ConnectionState.REMOTE_CLOSING:
                                replies += self.ws.send(event.response())
                            done = True
                    if replies:
                        self.sock.sendall(replies)
                except (OSError, ProtocolError, ValueError):
                    done = True
            for item in inbound:
                self._message(protocol, item)
            if done or not data:
                break
        self.gone.set()
        # the client is gone: the process loses its stdin (and its output on the next write)
        self._close_stdin()

    def run(self, protocol: str) -> None:
        failed = self._start()
        with self.lock:
            self.sock.sendall(self.ws.send(AcceptConnection(subprotocol=protocol)))
        # the first message tells the client the streams are up (kubelet's websocket.go)
        first = STDOUT if self.want[STDOUT] else STDERR if self.want[STDERR] else ERROR
        self.send(first, b"")
        pumps = []
        if self.proc is not None:
            for channel, pipe in ((STDOUT, self.proc.stdout), (STDERR, self.proc.stderr)):
                if pipe is not None:
                    pumps.append(threading.Thread(target=self._pump, args=(channel, pipe),
                                                  daemon=True))  # fmt: skip
        for pump in pumps:
            pump.start()
        finisher = threading.Thread(target=self._finish, args=(pumps, failed), daemon=True)
        finisher.start()
        self._read(protocol)
        # the handler thread returns when the client is gone; a process that goes on
        # running (as a real one would) is the emulator's to kill when it stops
        finisher.join(timeout=CLOSE_WAIT if self.closing.is_set() else 0)


def kill(proc: subprocess.Popen) -> None:
    """Kill an exec'd process and everything it started (its own session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignored
        log.warning("exec'd process %d did not die", proc.pid)
