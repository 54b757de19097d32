"""Render the sidecar container and restik's volumes from the Jinja templates, and hash them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
from ruamel.yaml import YAML

from reconciler import __version__
from reconciler.backup import Backup
from reconciler.constants import (
    CACHE_MOUNT,
    CACHE_VOLUME,
    METRICS_PORT,
    METRICS_PORT_NAME,
    REPO_MOUNT,
    REPO_VOLUME,
    SIDECAR_NAME,
)
from reconciler.resources import resource_dir

DEFAULT_IMAGE = f"restik:{__version__}"


@dataclass(frozen=True)
class Rendered:
    """What the controller owns in one workload's pod template."""

    container: dict
    volumes: tuple[dict, ...]
    config_hash: str


def templates_dir() -> Path:
    """The templates from an installed copy (package data) or, failing that, the source tree."""
    return resource_dir("reconciler.templates", "templates", "sidecar.yaml.j2")


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML, not HTML: every value goes through tojson
        keep_trailing_newline=True,
    )


_yaml = YAML(typ="safe", pure=True)


def _to_data(text: str):
    return _join_surrogates(_yaml.load(text))


def _join_surrogates(value):
    """tojson escapes characters beyond the BMP as surrogate pairs; YAML decodes each half
    separately, so join them again (ensure_ascii=False would let raw control characters in)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    if isinstance(value, dict):
        return {k: _join_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_surrogates(v) for v in value]
    return value


def config_hash(container: dict, volumes: tuple[dict, ...] | list[dict]) -> str:
    """A stable hash of everything rendered: equal hashes mean the pod template is in sync."""
    blob = json.dumps(
        {"container": container, "volumes": list(volumes)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Renderer:
    """Renders per (Backup, workload); results are cached since most cycles change nothing."""

    def __init__(self, image: str = DEFAULT_IMAGE, metrics_port: int = METRICS_PORT):
        self.image = image
        self.metrics_port = metrics_port
        env = _environment()
        self._sidecar = env.get_template("sidecar.yaml.j2")
        self._volumes = env.get_template("volumes.yaml.j2")
        self._cache: dict[tuple, Rendered] = {}

    def render(self, backup: Backup, workload_kind: str, workload_name: str) -> Rendered:
        key = (_backup_key(backup), workload_kind, workload_name)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._render(backup, workload_kind, workload_name)
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def _render(self, backup: Backup, workload_kind: str, workload_name: str) -> Rendered:
        values = {
            "backup": backup,
            "image": self.image,
            "container_name": SIDECAR_NAME,
            "workload_ref": f"{workload_kind}/{workload_name}",
            "metrics_port": self.metrics_port,
            "metrics_port_name": METRICS_PORT_NAME,
            "repo_volume": REPO_VOLUME,
            "repo_mount": REPO_MOUNT,
            "cache_volume": CACHE_VOLUME,
            "cache_mount": CACHE_MOUNT,
            "repo_volume_source": _repo_volume(backup),
        }
        container = _to_data(self._sidecar.render(values))
        volumes = tuple(_to_data(self._volumes.render(values)))
        return Rendered(container, volumes, config_hash(container, volumes))


def _repo_volume(backup: Backup) -> dict | None:
    if backup.destination_volume is None:
        return None
    source = {k: v for k, v in backup.destination_volume.items() if k != "name"}
    return {"name": REPO_VOLUME, **source}


def _backup_key(backup: Backup) -> str:
    # Backups hold dicts (resources, volume), so key the cache by their canonical JSON.
    fields = {
        "name": backup.name,
        "namespace": backup.namespace,
        "volume": backup.source_volume,
        "path": backup.source_path,
        "secret": backup.secret_name,
        "destination_volume": backup.destination_volume,
        "resources": backup.resources,
    }
    return json.dumps(fields, sort_keys=True, default=str)
