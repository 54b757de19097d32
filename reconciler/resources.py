"""Files shipped with restik (templates, the CRD), found in an installed copy or the source tree."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ruamel.yaml import YAML

PACKAGE_DIR = Path(__file__).resolve().parent
SOURCE_ROOT = PACKAGE_DIR.parent


def resource_dir(package: str, source_dir: str, probe: str) -> Path:
    """Where ``probe`` lives: package data of an installed copy (``reconciler/<sub>/``,
    ``package`` being ``reconciler.<sub>``), else ``source_dir`` of the source tree."""
    installed = PACKAGE_DIR / package.rpartition(".")[2]
    if (installed / probe).is_file():
        return installed
    return SOURCE_ROOT / source_dir


@lru_cache(maxsize=2)
def _load_crd(filename: str) -> dict:
    path = resource_dir("reconciler.kustomize", "kustomize", filename) / filename
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def crd_manifest() -> dict:
    """The Backup CRD, as kustomize/crd.yaml has it."""
    return _load_crd("crd.yaml")


def restore_crd_manifest() -> dict:
    """The Restore CRD, as kustomize/crd-restore.yaml has it."""
    return _load_crd("crd-restore.yaml")


def crd_manifests() -> tuple[dict, ...]:
    """Every CRD restik defines (the controller creates those that are absent)."""
    return (crd_manifest(), restore_crd_manifest())
