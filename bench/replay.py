"""A fixture API server that replays recorded LIST answers, byte for byte, on 127.0.0.1.

The emulator builds each LIST answer in Python, in the benchmark's own process; replaying
recorded bytes from a separate process takes the server out of the measurement, so a
cycle and its bare-LIST baseline differ only by what the client does.

    python bench/replay.py RECORDING.pickle    # prints the port, serves until stdin closes

Anything not recorded is answered 404 (a Kubernetes Status). ``GET /_bench/log`` returns
and clears the log of requests served.
"""

from __future__ import annotations

import json
import pickle
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

LOG_PATH = "/_bench/log"


def key(path: str, query: dict[str, str] | None) -> tuple:
    return (path, tuple(sorted((query or {}).items())))


def record(base_url: str, requests_to_record: list[tuple[str, dict | None]], out_path: str) -> int:
    """Fetch each (path, query) from a live server and store the answers; total bytes."""
    import requests

    answers: dict[tuple, bytes] = {}
    with requests.Session() as session:
        for path, query in requests_to_record:
            resp = session.get(base_url + path, params=query, timeout=120)
            resp.raise_for_status()
            answers[key(path, query)] = resp.content
    with open(out_path, "wb") as f:
        pickle.dump(answers, f, protocol=pickle.HIGHEST_PROTOCOL)
    return sum(len(v) for v in answers.values())


def _not_found(path: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"{path} not recorded",
            "reason": "NotFound",
            "code": 404,
        }
    ).encode()


def serve(answers: dict[tuple, bytes], port: int = 0) -> ThreadingHTTPServer:
    log: list[list] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if url.path == LOG_PATH:
                with lock:
                    body = json.dumps(log).encode()
                    log.clear()
                code = 200
            else:
                query = dict(parse_qsl(url.query, keep_blank_values=True))
                with lock:
                    log.append([self.command, url.path, query])
                body = answers.get(key(url.path, query)) if self.command == "GET" else None
                code = 200
                if body is None:
                    code, body = 404, _not_found(url.path)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class ReplayProcess:
    """The replay server as a child process, stopped on exit of the ``with`` block."""

    def __init__(self, recording: str):
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, __file__, recording],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError(f"replay server did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> list[list]:
        import requests

        return requests.get(self.url + LOG_PATH, timeout=30).json()

    def write_kubeconfig(self, path: str) -> str:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "replay", "cluster": {"server": self.url}}],
            "users": [{"name": "replay", "user": {}}],
            "contexts": [{"name": "replay", "context": {"cluster": "replay", "user": "replay"}}],
            "current-context": "replay",
        }
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> ReplayProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as f:
        answers = pickle.load(f)
    server = serve(answers)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    sys.stdin.read()  # the parent closes stdin (or dies): stop
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(None)
    sys.exit(main(sys.argv[1:]))
