"""Shared pytest fixtures (every fixture used by more than one test module is here)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from reconciler.api.constants import API_VERSION
from reconciler.resources import crd_manifest, restore_crd_manifest
from sidecar.job import Job
from sidecar.restic import Context
from sidecar.runner import Runner
from tests.emulator import Emulator
from tests.factories import (
    PASSWORD,
    REPO,
    RESTIC,
    WATCH_NS,
    Sidecar,
    backup_object,
    base_env,
    copy_template,
    wait_for,
    write_tree,
)


@pytest.fixture
def emulator():
    """A fresh Kubernetes API emulator on 127.0.0.1, stopped after the test."""
    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def kubeconfig(emulator, tmp_path):
    """Path of a kubeconfig (context "emulator", no auth) pointing at the emulator fixture."""
    return emulator.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def world(emulator, kubeconfig, tmp_path):
    """The emulator with the CRD, a source tree, a repository and a way to start sidecars."""
    emulator.create(crd_manifest())
    files = {"index.html": b"<h1>hi</h1>\n", "a/b.bin": os.urandom(5000)}
    src = write_tree(tmp_path / "src", files)
    repo = copy_template(tmp_path / "repo")
    started: list[Sidecar] = []

    class World:
        def __init__(self):
            self.emu, self.src, self.repo, self.tmp = emulator, src, repo, tmp_path

        def backup(self, schedule="@every 2s", name="www", **spec):
            obj = backup_object(str(src), str(repo), name=name, schedule=schedule)
            obj["spec"].update(spec)
            return emulator.create(obj)

        def patch_spec(self, name="www", **spec):
            return emulator.patch(API_VERSION, "backups", name, {"spec": spec}, WATCH_NS)

        def sidecar(
            self, *args, password=PASSWORD, pod="www-test", backup="www", metrics_port=None, **env
        ):
            full_env = base_env(
                password,
                POD_NAME=pod,
                POD_NAMESPACE=WATCH_NS,
                RESTIC_CACHE_DIR=str(tmp_path / f"cache-{pod}"),
                PYTHONPATH=str(REPO),
                **env,
            )
            sc = Sidecar(
                tmp_path, kubeconfig, ["--backup", backup, *args], full_env, pod, metrics_port
            )
            started.append(sc)
            return sc

        def events(self, name="www"):
            evs = [
                e
                for e in emulator.list("v1", "events", WATCH_NS)
                if e["involvedObject"].get("name") == name
            ]
            return sorted(evs, key=lambda e: int(e["metadata"]["name"].rsplit("-", 1)[1]))

        def status(self, name="www"):
            return (emulator.get(API_VERSION, "backups", name, WATCH_NS) or {}).get("status") or {}

        def wait_events(self, count, name="www", timeout=60):
            wait_for(lambda: len(self.events(name)) >= count, timeout, started)
            return self.events(name)

    try:
        yield World()
    finally:
        for sc in started:
            sc.terminate()


@pytest.fixture
def job_for(tmp_path):
    """A Job for a Backup; every restic it runs is bounded: ``backend_timeout`` for a
    backend that answers nothing (restic 0.17+ retries for 15 minutes), ``run_timeout``."""

    def make(
        backup,
        password=PASSWORD,
        host="www",
        stale_after=timedelta(minutes=30),
        backend_timeout=20.0,
        run_timeout=300.0,
        **env,
    ):
        cache = tmp_path / "cache"
        cache.mkdir(exist_ok=True)
        runner = Runner(
            base_env(password, TMPDIR=str(tmp_path), **env),
            stop_timeout=20,
            command_timeout=run_timeout,
            backend_timeout=backend_timeout,
        )
        ctx = Context(host=host, cache_dir=str(cache), restic=RESTIC)
        return Job(backup, ctx, runner, stale_after=stale_after)

    return make


@pytest.fixture
def cluster(emulator):
    """The emulator with restik's CRDs and the namespace "web" (the controller tests')."""
    emulator.create(crd_manifest())
    emulator.create(restore_crd_manifest())
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}})
    return emulator
