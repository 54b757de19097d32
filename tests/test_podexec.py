"""pods/exec: the emulator's WebSocket endpoint (as the API server and a kubelet serve it)
and the sidecar's client (sidecar/podexec.py) over real HTTP."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time

import pytest
import requests
import websocket

from reconciler.kube.client import ApiError, Kube
from sidecar.podexec import V4, V5, Connection, exit_code_of
from tests.emulator import Emulator
from tests.execpods import exec_client, running_pod
from tests.factories import REPO


@pytest.fixture
def emu():
    with Emulator() as emulator:
        running_pod(emulator, "db", "pg-0", "postgres", "restik")
        yield emulator


@pytest.fixture
def client(emu, tmp_path):
    return exec_client(emu, tmp_path)


def test_runs_the_command_with_its_output_and_exit_code(emu, client):
    result = client.run("db", "pg-0", "postgres", ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.error) == (3, "exited with code 3")
    assert (result.stdout, result.stderr) == (b"out\n", "err\n")
    assert not result.ok and result.describe() == "exited with code 3: err"
    ok = client.run("db", "pg-0", "postgres", ["true"])
    assert ok.ok and ok.exit_code == 0 and ok.error == ""
    [first, _] = [r for r in emu.requests if r.subresource == "exec"]
    assert (first.method, first.verb, first.path, first.status) == (
        "GET", "get", "/api/v1/namespaces/db/pods/pg-0/exec", 101)  # fmt: skip
    assert first.query["container"] == "postgres" and first.user_agent.startswith("restik/")


def test_stdin_is_streamed_and_ended(client, tmp_path):
    data = os.urandom(3_000_000)
    path = tmp_path / "input"
    path.write_bytes(data)
    chunks: list[bytes] = []
    with path.open("rb") as source:
        result = client.run("db", "pg-0", "postgres", ["cat"], stdin=source, stdout=chunks.append)
    assert result.ok, result
    assert hashlib.sha256(b"".join(chunks)).digest() == hashlib.sha256(data).digest()
    assert len(chunks) > 10 and max(map(len, chunks)) <= 64 * 1024  # streamed, not buffered
    counted = client.run("db", "pg-0", "postgres", ["wc", "-c"], stdin=iter([b"ab", b"cde"]))
    assert counted.ok and counted.stdout.strip() == b"5"  # wc saw the end of its input


def test_the_container_mapping_gives_cwd_env_and_user(emu, client, tmp_path):
    user = "nobody" if os.geteuid() == 0 else getpass.getuser()
    emu.exec_env[("db", "pg-0", "postgres")] = {
        "cwd": str(tmp_path), "env": {"PGPORT": "5433"}, "user": user}  # fmt: skip
    result = client.run("db", "pg-0", "postgres", ["sh", "-c", 'pwd; echo "$PGPORT"; id -un'])
    assert result.stdout.decode().split() == [str(tmp_path), "5433", user]
    other = client.run("db", "pg-0", "restik", ["sh", "-c", 'echo "${PGPORT:-unset}"'])
    assert other.stdout == b"unset\n"  # another container, another environment


@pytest.mark.parametrize(
    ("pod", "container", "code", "message"),
    [
        ("nope", "postgres", 404, 'pods "nope" not found'),
        ("pg-0", "mysql", 400, "container mysql is not valid for pod pg-0"),
        ("pg-0", "", 400, "a container name must be specified for pod pg-0, choose one of: "
         "[postgres restik]"),
        ("waiting", "app", 400, 'unable to upgrade connection: container not found ("app")'),
        ("unscheduled", "app", 400, "pod unscheduled does not have a host assigned"),
    ],
)  # fmt: skip
def test_refusals_before_anything_runs(emu, client, tmp_path, pod, container, code, message):
    running_pod(emu, "db", "waiting", "app", running=False)
    running_pod(emu, "db", "unscheduled", "app", node=None)
    marker = tmp_path / "ran"
    with pytest.raises(ApiError) as caught:
        client.run("db", pod, container, ["touch", str(marker)])
    assert (caught.value.status, caught.value.message) == (code, message)
    assert not marker.exists()


def test_a_missing_command_is_an_internal_error_on_the_error_channel(client):
    result = client.run("db", "pg-0", "postgres", ["no-such-dump-command", "--all"])
    assert result.exit_code is None and not result.ok
    assert result.error.startswith("Internal error occurred: error executing command")
    assert '"no-such-dump-command": executable file not found in $PATH' in result.error


def test_a_hanging_command_times_out_and_runs_on_as_in_a_real_cluster(emu, client):
    started = time.monotonic()
    result = client.run("db", "pg-0", "postgres", ["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 3
    assert result.timed_out and result.error == "timed out after 1s" and result.exit_code is None
    # a runtime does not kill an exec'd process when its stream closes (runc#3359)
    [proc] = emu.exec_processes
    assert proc.args == ["sleep", "30"] and proc.poll() is None
    emu.stop()
    assert proc.poll() is not None  # the emulator kills what is left when it stops


def test_a_command_whose_stream_closed_dies_on_its_next_write(emu, client):
    result = client.run("db", "pg-0", "postgres", ["sh", "-c", "sleep 1; echo late"], timeout=0.3)
    assert result.timed_out
    [proc] = emu.exec_processes
    assert proc.wait(10) == -signal.SIGPIPE  # its stdout went with the stream


def test_a_failing_output_consumer_closes_the_stream(client):
    def refuse(chunk: bytes) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    result = client.run("db", "pg-0", "postgres", ["yes"], stdout=refuse, timeout=10)
    assert not result.ok and not result.timed_out
    assert result.error == "could not pass the output on: [Errno 32] Broken pipe"


def test_cancel_interrupts_a_running_command(client):
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    result = client.run("db", "pg-0", "postgres", ["sleep", "30"], cancel=cancel)
    assert result.error == "interrupted: the sidecar is stopping" and result.duration < 3


def test_stderr_and_captured_stdout_are_bounded(client):
    script = "head -c 200000 /dev/zero | tr '\\0' a; head -c 200000 /dev/zero | tr '\\0' b >&2"
    result = client.run("db", "pg-0", "postgres", ["sh", "-c", script], output_limit=1000)
    assert result.ok and result.stdout == b"a" * 1000
    assert result.stderr == "[199000 bytes before this left out]\n" + "b" * 1000


def test_retryable_answers_before_the_upgrade_are_retried(tmp_path):
    with Emulator(fail_rate=0.4, seed=3) as emu:
        running_pod(emu, "db", "pg-0", "postgres")
        client = exec_client(emu, tmp_path)
        for n in range(6):
            assert client.run("db", "pg-0", "postgres", ["echo", str(n)]).stdout == b"%d\n" % n
        faults = [r.fault for r in emu.requests if r.subresource == "exec" and r.fault]
        assert faults, "the seed should draw faults"


# -- the protocol as a raw WebSocket client sees it -----------------------------------------


def _raw(emu, query: str, protocols: list[str]):
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{emu.port}/api/v1/namespaces/db/pods/pg-0/exec?{query}",
               subprotocols=protocols, timeout=10)  # fmt: skip
    messages = []
    while True:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return ws, messages
        messages.append(data)


def test_v4_framing_first_message_status_and_close(emu):
    query = "container=postgres&command=sh&command=-c&command=echo+hi;exit+7&stdout=1&stderr=1"
    ws, messages = _raw(emu, query, ["v4.channel.k8s.io"])
    assert ws.subprotocol == V4
    assert messages[0] == b"\x01"  # the empty message that says the streams are up
    assert messages[1] == b"\x01hi\n"
    assert messages[-1][:1] == b"\x03"
    assert json.loads(messages[-1][1:]) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: command 'sh -c echo hi;exit 7' "
        "exited with 7",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
    }
    ws, messages = _raw(emu, "container=postgres&command=true&stderr=true", [V5, V4])
    assert ws.subprotocol == V5  # the client's first choice
    assert messages == [b"\x02", b'\x03{"metadata":{},"status":"Success"}']


def test_only_a_websocket_upgrade_with_a_known_protocol_is_served(emu):
    url = f"{emu.url}/api/v1/namespaces/db/pods/pg-0/exec?container=postgres&command=true&stdout=1"
    plain = requests.get(url, timeout=5)
    assert (plain.status_code, plain.json()["message"]) == (400, "Upgrade request required")
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        _raw(emu, "container=postgres&command=true&stdout=true", ["channel.k8s.io.v99"])
    assert caught.value.status_code == 400
    assert b"requested protocol(s) are not supported" in caught.value.resp_body
    nothing = requests.get(url.replace("&stdout=1", ""), headers={"Upgrade": "websocket"})
    assert nothing.json()["message"] == "you must specify at least 1 of stdin, stdout, stderr"


def test_discovery_lists_pods_exec(emu):
    listing = requests.get(f"{emu.url}/api/v1", timeout=5).json()
    [entry] = [r for r in listing["resources"] if r["name"] == "pods/exec"]
    assert entry == {"name": "pods/exec", "singularName": "", "namespaced": True,
                     "kind": "PodExecOptions", "verbs": ["create", "get"]}  # fmt: skip


def test_exit_code_of_reads_the_status():
    assert exit_code_of({"status": "Success"}) == (0, "")
    failure = {"status": "Failure", "reason": "NonZeroExitCode", "message": "m",
               "details": {"causes": [{"reason": "ExitCode", "message": "137"}]}}  # fmt: skip
    assert exit_code_of(failure) == (137, "exited with code 137")
    assert exit_code_of({"status": "Failure", "reason": "InternalError", "message": "boom"}) == (
        None, "boom")  # fmt: skip


# -- credentials: the same as the Kube client's ----------------------------------------------


def _kubeconfig(tmp_path, cluster: dict, user: dict):
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "c",
                            "cluster": {"server": "https://10.0.0.1:6443", **cluster}}],
              "users": [{"name": "u", "user": user}],
              "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
              "current-context": "x"}  # fmt: skip
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return Kube.connect(str(path))


def test_connection_uses_the_token_ca_and_client_certificate(tmp_path):
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (tmp_path / name).write_text(name)
    kube = _kubeconfig(
        tmp_path,
        {"certificate-authority": str(tmp_path / "ca.crt"), "tls-server-name": "kubernetes"},
        {"token": "s3cr3t-token", "client-certificate": str(tmp_path / "tls.crt"),
         "client-key": str(tmp_path / "tls.key")},
    )  # fmt: skip
    conn = Connection.from_kube(kube)
    assert conn.url == "https://10.0.0.1:6443"
    assert dict(conn.headers)["Authorization"] == "Bearer s3cr3t-token"
    assert dict(conn.headers)["User-Agent"].startswith("restik/")
    assert conn.sslopt == {
        "cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(tmp_path / "ca.crt"),
        "certfile": str(tmp_path / "tls.crt"), "keyfile": str(tmp_path / "tls.key"),
        "server_hostname": "kubernetes",
    }  # fmt: skip
    insecure = Connection.from_kube(_kubeconfig(tmp_path, {"insecure-skip-tls-verify": True}, {}))
    assert insecure.sslopt == {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
    assert "Authorization" not in dict(insecure.headers)


def test_the_idle_sidecar_does_not_load_the_websocket_client():
    code = ("import sys, sidecar.podexec, sidecar.stream, sidecar.hooks; "
            "print('websocket' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=60)  # fmt: skip
    assert done.stdout.strip() == "False", done.stderr


def test_an_api_server_without_v5_serves_commands_but_cannot_end_their_input(
    emu, client, monkeypatch
):
    from tests.emulator import podexec as served

    monkeypatch.setattr(served, "PROTOCOLS", (V4,))  # as before Kubernetes 1.30
    assert client.run("db", "pg-0", "postgres", ["echo", "old"]).stdout == b"old\n"
    with pytest.raises(ApiError) as caught:
        client.run("db", "pg-0", "postgres", ["psql"], stdin=b"SELECT 1;")
    assert caught.value.status == 400
    assert caught.value.message.endswith(
        "(a command's input can only be ended with v5.channel.k8s.io: Kubernetes 1.30 or later)"
    )


def test_a_failing_input_cuts_the_stream_instead_of_ending_it(client):
    def source():
        yield b"SELECT 1;\n"
        raise OSError(5, "Input/output error")

    result = client.run("db", "pg-0", "postgres", ["cat"], stdin=source(), timeout=10)
    assert not result.timed_out and result.duration < 5
    assert result.error == "could not read the input: [Errno 5] Input/output error"
