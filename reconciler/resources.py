"""Files shipped with restik (templates, the CRD), found in an installed copy or the source tree."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent


def resource_dir(package: str, source_dir: str, probe: str) -> Path:
    """The installed package-data folder when it holds ``probe``, else the source folder."""
    try:
        from importlib.resources import files

        installed = Path(str(files(package)))
        if (installed / probe).is_file():
            return installed
    except ModuleNotFoundError:
        pass
    return SOURCE_ROOT / source_dir


@lru_cache(maxsize=1)
def crd_manifest() -> dict:
    """The Backup CRD, as kustomize/crd.yaml has it."""
    from ruamel.yaml import YAML

    path = resource_dir("reconciler.kustomize", "kustomize", "crd.yaml") / "crd.yaml"
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
