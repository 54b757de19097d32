"""Mistakes explain themselves: what a newcomer sees for a missing config or a dead server."""

from __future__ import annotations

import socket

import pytest

from reconciler.kube import client as kube_module
from reconciler.kube.client import ApiError, ConfigError, Kube, load_config


@pytest.fixture
def no_config(monkeypatch, tmp_path):
    """No $KUBECONFIG, an empty home and no in-cluster service account."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(kube_module, "SERVICE_ACCOUNT_DIR", tmp_path / "serviceaccount")
    return tmp_path


def test_no_configuration_names_every_place_looked(no_config):
    with pytest.raises(ConfigError) as info:
        load_config(None)
    text = str(info.value)
    assert "--kubeconfig" in text
    assert "$KUBECONFIG is not set" in text
    assert str(no_config / ".kube" / "config") in text
    assert "in-cluster service account" in text
    assert "serviceaccount/token" in text


@pytest.mark.parametrize("flag", [True, False])
def test_a_kubeconfig_that_does_not_exist_names_its_origin(no_config, monkeypatch, flag):
    missing = str(no_config / "nope.yaml")
    if flag:
        call = missing
        origin = "--kubeconfig"
    else:
        monkeypatch.setenv("KUBECONFIG", missing)
        call = None
        origin = "$KUBECONFIG"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_config(call)
    assert str(info.value).startswith(f"{origin} names {missing}")


def test_home_kubeconfig_is_used_when_nothing_else_is_given(no_config, emulator):
    (no_config / ".kube").mkdir()
    emulator.write_kubeconfig(no_config / ".kube" / "config")
    config = load_config(None)
    assert config.cluster["server"] == emulator.url


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_named_with_its_cause(tmp_path, emulator):
    path = emulator.write_kubeconfig(tmp_path / "kubeconfig")
    kube = Kube.connect(str(path), timeout=2)
    url = f"http://127.0.0.1:{_closed_port()}"
    kube.client.url = url
    with pytest.raises(ApiError) as info:
        kube._request_once("GET", "/api/v1/namespaces", None, None, "application/json")
    text = str(info.value)
    assert text == f"ConnectionError: cannot reach the API server at {url}: Connection refused"
    assert info.value.status == 0
    assert info.value.retryable


def test_http_errors_still_show_their_status():
    assert str(ApiError(409, "Conflict", "changed")) == "409 Conflict: changed"


def _options(command: str):
    import argparse

    from reconciler import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command], [
        a for a in sub.choices[command]._actions if not isinstance(a, argparse._HelpAction)
    ]


@pytest.mark.parametrize("command", ["run", "watch", "diff", "inject", "status"])
def test_every_option_of_every_command_says_its_default(command):
    """`restik CMD --help` answers "what if I leave it out": an option that takes a value
    names its default or says it is required (on/off switches are off unless said)."""
    _, actions = _options(command)
    for action in actions:
        text = (action.help or "").lower()
        if action.nargs == 0 and action.default is False:
            continue  # a switch such as --once or --dry-run
        assert "default" in text or "required" in text, (action.option_strings, action.help)


def test_run_help_shows_the_image_and_restart_defaults():
    from reconciler import __version__
    from reconciler.controller.render import DEFAULT_IMAGE

    parser, _ = _options("run")
    text = " ".join(parser.format_help().split())
    assert DEFAULT_IMAGE == f"restik:{__version__}"
    assert f"(RESTIK_SIDECAR_IMAGE, default {DEFAULT_IMAGE})" in text
    assert "(RESTIK_MAX_RESTARTS, default 5)" in text
    assert parser.parse_args([]).max_restarts == 5


def test_the_readme_names_the_default_image_the_cli_injects():
    import re
    from pathlib import Path

    from reconciler.controller.render import DEFAULT_IMAGE

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    tags = set(re.findall(r"\brestik:\d+\.\d+\.\d+\b", readme))
    assert tags == {DEFAULT_IMAGE}
    assert f"[--sidecar-image {DEFAULT_IMAGE}]" in readme
