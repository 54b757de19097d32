"""Shared pytest fixtures."""

from __future__ import annotations

import pytest

from tests.emulator import Emulator


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
