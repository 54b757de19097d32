"""The README's walkthrough, run command by command, so it cannot drift from the code."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Try the controller without a cluster"
# Lines a reader runs once to set up; CI has done the same (.ci/run), so they are skipped.
INSTALL_PREFIXES = ("sudo apt-get", "apt-get", "python3 -m venv", "pip install")
# What the README says each command shows, checked here (waiting where the README says so).
EXPECTED_OUTPUT = {
    "restik run --once --dry-run": ["restik"],  # the first one: a planned sidecar
    "kubectl get pods -n web": ["2/2", "Running"],
    "kubectl get bk -n web": ["SCHEDULE", "LAST SUCCESS", "READY", "True"],
    "kubectl describe backup -n web www": ["Ready", "Deployment/www"],
    "kubectl get events -n web": ["Success", "backup/demo"],
    "restic -r": ["demo-0"],
}
WAIT_FOR_OUTPUT = {
    "kubectl get pods -n web",
    "kubectl get bk -n web",
    "kubectl get events -n web",
    "restic -r",
}


def walkthrough_blocks(text: str) -> list[list[str]]:
    """The indented code blocks of the walkthrough section, as lists of lines."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in section.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif not line.strip() and current:
            current.append("")
        else:
            if any(current):
                blocks.append(current)
            current = []
    if any(current):
        blocks.append(current)
    return blocks


def commands(lines: list[str]) -> list[str]:
    """Shell commands: continuation lines joined, here-documents kept with their command."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip():
            continue
        command = line
        while command.endswith("\\") and i < len(lines):
            command = command + "\n" + lines[i]
            i += 1
        heredoc = re.search(r"<<'?(\w+)'?", command)
        if heredoc:
            while i < len(lines):
                command += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == heredoc.group(1):
                    break
        out.append(command)
    return out


def split_comment(command: str) -> tuple[str, str]:
    first, _, rest = command.partition("\n")
    match = re.search(r"\s{2,}#\s?(.*)$", first)
    if not match:
        return command, ""
    code = first[: match.start()] + ("\n" + rest if rest else "")
    return code, match.group(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_walkthrough_is_parsed_as_the_reader_sees_it():
    blocks = walkthrough_blocks(README.read_text())
    cmds = [c for b in blocks for c in commands(b)]
    assert any(c.startswith("python -m tests.emulator") and "--load" in c for c in cmds)
    heredoc = next(c for c in cmds if "<<'YAML'" in c)
    assert heredoc.rstrip().endswith("YAML") and "kind: Backup" in heredoc
    code, comment = split_comment("restik run --once --dry-run          # prints, exit 1")
    assert (code.strip(), comment) == ("restik run --once --dry-run", "prints, exit 1")


@pytest.mark.slow
@pytest.mark.restic
def test_readme_walkthrough_runs_as_written(tmp_path):
    if shutil.which("restic") is None and not os.environ.get("CI"):
        pytest.skip("restic is not installed")
    port = str(free_port())
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("KUBECONFIG", None)
    background: list[subprocess.Popen] = []
    seen: set[str] = set()

    def adapt(command: str) -> str:
        return command.replace("/tmp/", f"{tmp_path}/").replace("8001", port)

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        for block in walkthrough_blocks(README.read_text()):
            for raw in commands(block):
                if raw.startswith(INSTALL_PREFIXES):
                    continue
                code, comment = split_comment(adapt(raw))
                code = code.strip()
                export = re.fullmatch(r"export (\w+)=(\S+)", code)
                if export:
                    env[export.group(1)] = export.group(2)
                    continue
                if code.endswith("&"):
                    log = (tmp_path / f"bg{len(background)}.log").open("w")
                    background.append(
                        subprocess.Popen(
                            ["bash", "-c", code[:-1]],
                            cwd=ROOT,
                            env=env,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
                    continue
                bare = re.sub(r"^(\w+=\S+\s+)+", "", code)  # without leading VAR=value
                key = next((k for k in EXPECTED_OUTPUT if bare.startswith(k)), None)
                deadline = time.monotonic() + (90 if key in WAIT_FOR_OUTPUT else 0)
                while True:
                    proc = run(code)
                    output = proc.stdout + proc.stderr
                    wanted = EXPECTED_OUTPUT.get(key, []) if key not in seen else []
                    if all(w in output for w in wanted) or time.monotonic() > deadline:
                        break
                    time.sleep(1)
                for w in wanted:
                    assert w in output, f"{raw!r}: expected {w!r} in\n{output}"
                if key:
                    seen.add(key)
                expected = re.search(r"\bexit (\d)\b", comment)
                want = int(expected.group(1)) if expected else 0
                assert proc.returncode == want, f"{raw!r} exited {proc.returncode}:\n{output}"
        assert seen == set(EXPECTED_OUTPUT), "the README no longer shows these commands"
        for proc in background:
            assert proc.poll() is None, f"{proc.args} stopped early"
    finally:
        for proc in background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in background:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
