"""The idle sidecar stays small because its import graph is small: `restik watch` builds the
CLI's parser (every command's options, stdlib-only modules) and then loads the sidecar, which
uses the API layer (reconciler.api, reconciler.kube) and nothing of the controller."""

from __future__ import annotations

import json
import subprocess
import sys

# What `restik watch` loads of restik, exactly: a new import here is a decision, not an accident.
SIDECAR_MODULES = {
    "reconciler",
    "reconciler.api",
    "reconciler.api.backup",
    "reconciler.api.check",
    "reconciler.api.constants",
    "reconciler.api.destination",
    "reconciler.api.duration",
    "reconciler.api.fields",
    "reconciler.api.hooks",
    "reconciler.api.resources",
    "reconciler.api.retention",
    "reconciler.api.schedule",
    "reconciler.api.source",
    "reconciler.api.times",
    "reconciler.cli",
    "reconciler.controller",
    "reconciler.controller.options",
    "reconciler.http",
    "reconciler.kube",
    "reconciler.kube.client",
    "reconciler.kube.errors",
    "reconciler.kube.events",
    "reconciler.kube.lease",
    "reconciler.kube.resource",
    "reconciler.logs",
    "reconciler.overview",
    "reconciler.overview.options",
    "reconciler.restores",
    "reconciler.restores.options",
    "sidecar",
    "sidecar.backend",
    "sidecar.check",
    "sidecar.environment",
    "sidecar.follow",
    "sidecar.hooks",
    "sidecar.job",
    "sidecar.lease",
    "sidecar.main",
    "sidecar.metrics",
    "sidecar.options",
    "sidecar.outcome",
    "sidecar.podexec",
    "sidecar.process",
    "sidecar.report",
    "sidecar.repository",
    "sidecar.restic",
    "sidecar.restic_output",
    "sidecar.restore_options",
    "sidecar.runner",
    "sidecar.scheduler",
    "sidecar.shell",
    "sidecar.startup",
    "sidecar.stream",
}
# Building the parser of every command imports their options modules only (stdlib-only).
PARSER_MODULES = {
    "reconciler",
    "reconciler.api",
    "reconciler.api.constants",
    "reconciler.api.duration",
    "reconciler.cli",
    "reconciler.controller",
    "reconciler.controller.options",
    "reconciler.logs",
    "reconciler.overview",
    "reconciler.overview.options",
    "reconciler.restores",
    "reconciler.restores.options",
    "sidecar",
    "sidecar.options",
    "sidecar.restore_options",
}
OURS = ("reconciler", "sidecar")


def _loaded(code: str) -> dict:
    # what the interpreter itself loaded before any restik code (site hooks, .pth files of
    # the machine: e.g. a CA bundle's certifi) is not restik's
    script = (
        "import json, sys\nbefore = set(sys.modules)\n" + code + "\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] in " + repr(OURS) + ")\n"
        "std = sys.stdlib_module_names\n"
        "others = sorted(m for m in sys.modules if m.split('.')[0] not in std"
        " and m not in before)\n"
        "print(json.dumps({'ours': ours, 'others': others}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout)


def test_the_parser_of_every_command_imports_options_modules_only():
    loaded = _loaded("from reconciler import cli\ncli.build_parser()")
    assert set(loaded["ours"]) == PARSER_MODULES
    third_party = {m.split(".")[0] for m in loaded["others"]} - set(OURS)
    # what the interpreter and an editable install load before any restik code
    third_party = {m for m in third_party if not m.startswith("_")}
    assert third_party == set(), third_party


def test_the_sidecar_imports_exactly_its_modules_and_no_controller_code():
    loaded = _loaded("from reconciler import cli\ncli.build_parser()\nimport sidecar.main")
    assert set(loaded["ours"]) == SIDECAR_MODULES
    controller = {m for m in loaded["ours"] if m.startswith("reconciler.controller.")}
    assert controller == {"reconciler.controller.options"}
    third_party = {m.split(".")[0] for m in loaded["others"]}
    assert not third_party & {"jinja2", "ruamel"}, "rendering and manifests are not the sidecar's"
