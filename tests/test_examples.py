"""The shipped examples: valid Kubernetes objects before and after `restik inject`, valid
Backups under the CRD schema and the model."""

from __future__ import annotations

import functools
import io

import kubernetes_validate
import pytest

from reconciler import cli
from reconciler.api.backup import parse_backup
from reconciler.api.constants import CONFIG_LABEL
from tests.factories import EXAMPLES, crd_validator, example_objects, load_all

K8S_VERSIONS = ("1.30", "1.37")
EXAMPLES_LIST = example_objects()


@functools.lru_cache(maxsize=1)
def injected_examples() -> tuple[str, list[dict]]:
    import contextlib

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["inject", "-f", str(EXAMPLES)])
    assert code == 0, err.getvalue()
    return out.getvalue(), load_all(out.getvalue())


def is_builtin(obj) -> bool:
    """A Kubernetes built-in kind: core, a group without a dot, or a *.k8s.io group
    (not Backups, and not third-party CRDs such as Argo CD's or Flux's)."""
    api = obj["apiVersion"]
    group = api.rsplit("/", 1)[0] if "/" in api else ""
    return "." not in group or group.endswith(".k8s.io")


def _builtin(objs):
    return [o for o in objs if is_builtin(o)]


BUILTIN = [(w, o) for w, o in EXAMPLES_LIST if is_builtin(o)]


def test_examples_cover_both_destinations_and_two_kinds():
    kinds = {o["kind"] for _, o in EXAMPLES_LIST}
    assert {"Deployment", "StatefulSet", "Backup"} <= kinds
    backups = [parse_backup(o) for _, o in EXAMPLES_LIST if o["kind"] == "Backup"]
    assert {b.is_local for b in backups} == {False, True}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "obj",
    [o for _, o in BUILTIN],
    ids=[w for w, _ in BUILTIN],
)
def test_builtin_examples_validate_strictly(obj, version):
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_injected_examples_validate_strictly(version):
    _, objs = injected_examples()
    builtin = _builtin(objs)
    assert {o["kind"] for o in builtin} >= {"Deployment", "StatefulSet"}
    for obj in builtin:
        kubernetes_validate.validate(obj, version, strict=True)
    labeled = [o for o in builtin if CONFIG_LABEL in (o["metadata"].get("labels") or {})]
    assert len(labeled) >= 2
    for obj in labeled:
        names = [c["name"] for c in obj["spec"]["template"]["spec"]["containers"]]
        assert "restik" in names


@pytest.mark.parametrize(
    "obj",
    [o for _, o in EXAMPLES_LIST if o["kind"] == "Backup"],
    ids=[w for w, o in EXAMPLES_LIST if o["kind"] == "Backup"],
)
def test_example_backups_validate_under_the_crd_and_the_model(obj):
    errors = [e.message for e in crd_validator().iter_errors(obj)]
    assert errors == []
    backup = parse_backup(obj)
    assert backup.name == obj["metadata"]["name"]


def test_injected_backups_are_unchanged():
    _, objs = injected_examples()
    assert [o for o in objs if o["kind"] == "Backup"] == [
        o for _, o in EXAMPLES_LIST if o["kind"] == "Backup"
    ]
