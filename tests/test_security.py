"""Security review as tests: no secret value anywhere restik writes or shows, and nothing
from a Backup ever reaches a shell."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from reconciler.controller.cycle import Controller
from reconciler.controller.options import Settings
from reconciler.kube.client import Kube
from reconciler.resources import crd_manifest
from tests.factories import PASSWORD, needs_restic, restic
from tests.factories.cluster import NS, backup, get, workload

S3_SECRET = "aws-Secret-Key-never-shown-0042"


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmdlines(pids) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def everything_written(emulator) -> str:
    """Every request body restik sent, and every object the API now holds, as text."""
    bodies = [json.dumps(r.body) for r in emulator.requests if r.body is not None]
    stored = []
    for api, kind in (
        ("v1", "events"),
        ("backup.appscode.com/v1beta1", "backups"),
        ("apps/v1", "deployments"),
        ("rbac.authorization.k8s.io/v1", "rolebindings"),
        ("coordination.k8s.io/v1", "leases"),
    ):
        try:
            stored += [json.dumps(o) for o in emulator.list(api, kind)]
        except KeyError:
            continue
    return "\n".join(bodies + stored)


@needs_restic
@pytest.mark.slow
def test_no_secret_in_args_logs_events_status_or_metrics(world):
    world.backup(tags=["prod"])
    sc = world.sidecar(AWS_SECRET_ACCESS_KEY=S3_SECRET)
    seen_cmdlines: list[str] = []
    deadline = time.monotonic() + 60
    while len(world.events()) < 2 and time.monotonic() < deadline:
        seen_cmdlines += cmdlines(process_tree(sc.proc.pid))
        time.sleep(0.02)
    assert [e["reason"] for e in world.events()][:2] == ["Success", "Success"]
    assert any("restic" in c and "backup" in c for c in seen_cmdlines)  # we did see restic
    metrics = sc.get("/metrics")[1]
    sc.terminate()
    wrong = world.sidecar(password="Wrong-" + PASSWORD, pod="second")
    world.wait_events(3)
    wrong.terminate()
    assert world.events()[-1]["reason"] == "Failed"

    texts = {
        "process arguments": "\n".join(seen_cmdlines),
        "logs": sc.log + wrong.log,
        "API writes": everything_written(world.emu),
        "metrics": metrics,
    }
    for where, text in texts.items():
        assert PASSWORD not in text, where
        assert S3_SECRET not in text, where


def test_controller_never_reads_secrets_and_renders_only_references(emulator, kubeconfig):
    emulator.create(crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "www-restic", "namespace": NS},
            "stringData": {"password": PASSWORD, "AWS_SECRET_ACCESS_KEY": S3_SECRET},
        }
    )
    emulator.create(backup())
    emulator.create(workload())
    Controller(Kube.connect(str(kubeconfig)), Settings()).cycle()
    assert not [r for r in emulator.requests if r.resource == "secrets"]
    text = everything_written(emulator)
    assert PASSWORD not in text and S3_SECRET not in text
    (sidecar,) = [
        c
        for c in get(emulator, "Deployment")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "restik"
    ]
    password = next(e for e in sidecar["env"] if e["name"] == "RESTIC_PASSWORD")
    assert password == {
        "name": "RESTIC_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "www-restic", "key": "password", "optional": True}},
    }
    assert "envFrom" not in sidecar  # only named keys, never the whole Secret (issue 13 item 5)
    # Values are restik's own constants only, never a Backup's or a Secret's.
    assert {e["name"]: e["value"] for e in sidecar["env"] if "value" in e} == {
        "RESTIC_CACHE_DIR": "/restik/cache",
        "TMPDIR": "/restik/cache",
        "RESTIC_REPOSITORY_FILE": "/restik/cache/repository",
        "RESTIC_REPOSITORY": "",
    }


@needs_restic
@pytest.mark.slow
def test_hostile_backup_values_never_reach_a_shell(world, tmp_path):
    markers = [tmp_path / f"pwned{i}" for i in range(4)]
    tags = [f"$(touch {markers[0]})", f"`touch {markers[1]}`"]
    excludes = [f"; touch {markers[2]}", f"--exclude=x && touch {markers[3]}"]
    world.backup(tags=tags, excludes=excludes)
    sc = world.sidecar()
    world.wait_events(1)
    sc.terminate()
    assert world.events()[0]["reason"] == "Success", world.events()[0]["message"]
    assert not any(m.exists() for m in markers)
    snaps = json.loads(restic(str(world.repo), "snapshots", "--json").stdout)
    assert snaps[-1]["tags"] == tags  # verbatim, as data


def test_sources_never_use_a_shell():
    """No subprocess call with shell=True and no os.system anywhere in restik's code."""
    root = Path(__file__).resolve().parent.parent
    for package in ("reconciler", "sidecar"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            assert "shell=True" not in text, path
            assert "os.system" not in text and "os.popen" not in text, path
    assert os.path.exists(root / "sidecar" / "runner.py")
