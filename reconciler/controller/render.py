"""Render the sidecar container and restik's volumes from the Jinja templates, and hash them."""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.filters
from ruamel.yaml import YAML

from reconciler import __version__
from reconciler.api.backup import Backup
from reconciler.api.constants import (
    CACHE_MOUNT,
    CACHE_VOLUME,
    METRICS_PORT_NAME,
    REPO_MOUNT,
    REPO_VOLUME,
    REPOSITORY_FILE,
    SECRET_ENV,
    SECRET_PASSWORD_KEY,
    SIDECAR_NAME,
    TOKEN_MOUNT,
    TOKEN_VOLUME,
)
from reconciler.controller.pod import UNKNOWN_USER, AppUser
from reconciler.controller.shapes import Shapes, tojson_or_token
from reconciler.resources import resource_dir

DEFAULT_IMAGE = f"restik:{__version__}"
DEFAULT_USER = 65532  # the image's own user and group (Dockerfile)


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
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML, not HTML: every value goes through tojson
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = tojson_or_token
    return env


_yaml = YAML(typ="safe", pure=True)


def _libyaml_loader():
    """PyYAML's libyaml-based loader when installed (pykube-ng depends on PyYAML; its wheels
    carry libyaml), else None. It parses a render ~15x faster than ruamel.yaml's pure-Python
    loader: with 1,000 Backups that is most of a restart's first cycle. The rendered YAML
    never holds what YAML 1.1 and 1.2 read differently (every value is a JSON scalar from
    tojson; the templates' own literals are plain words, quoted strings and decimal
    numbers): tests/test_render.py checks both loaders agree on hostile values. What libyaml
    refuses (tojson's surrogate pairs for characters beyond the BMP) goes to ruamel.yaml."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML comes with pykube-ng
        return None
    return getattr(yaml, "CSafeLoader", None) and (yaml, yaml.CSafeLoader)


_LIBYAML = _libyaml_loader()


def _to_data(text: str):
    if _LIBYAML is not None:
        yaml, loader = _LIBYAML
        try:
            return _join_surrogates(yaml.load(text, Loader=loader))
        except yaml.YAMLError:
            pass  # libyaml refuses escaped surrogate pairs (characters beyond the BMP)
    return _join_surrogates(_yaml.load(text))


def _to_data_pure(text: str):
    """The pure-Python reading of a render (the fallback), for comparison in tests."""
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


def render_text(template: jinja2.Template, values: Mapping):
    """A template's render as data the plain way: every value in the text, the text parsed."""
    return _to_data(template.render(values))


def _canonical(container: dict, volumes: tuple[dict, ...] | list[dict]) -> str:
    return json.dumps(
        {"container": container, "volumes": list(volumes)}, sort_keys=True, separators=(",", ":")
    )


def config_hash(container: dict, volumes: tuple[dict, ...] | list[dict]) -> str:
    """A stable hash of everything rendered: equal hashes mean the pod template is in sync."""
    return hashlib.sha256(_canonical(container, volumes).encode()).hexdigest()[:16]


# Rendered once per Backup with these in place of the workload and the sidecar's user, then
# filled in per workload. The workload placeholder JSON-encodes to itself, so the hash blob
# is filled in by plain string replacement; the user and group placeholders stand where
# numbers go, so the blob replaces them quotes included. A random part per process keeps
# any value from a Backup from ever matching them; hashes do not depend on it, since the
# placeholders are replaced before hashing.
_NONCE = secrets.token_hex(8)
WORKLOAD_PLACEHOLDER = f"@@restik-workload-{_NONCE}@@"
USER_PLACEHOLDER = f"@@restik-user-{_NONCE}@@"
GROUP_PLACEHOLDER = f"@@restik-group-{_NONCE}@@"


@dataclass(frozen=True)
class _Base:
    """What is kept of one Backup's rendering for as long as the Backup exists: the canonical
    JSON that config_hash() hashes (placeholders included), zlib-compressed (~7 KiB to
    ~1 KiB: its ~40 backend variables repeat the Secret's name), and the hashes made from
    it. The rendered container itself (~25 KiB of dicts) is kept only for the last
    FULL_RENDERS_KEPT Backups: at 5,000 Backups all of them would be most of the
    controller's memory, and a steady cycle needs only the hashes."""

    blob: bytes
    hashes: dict = field(default_factory=dict)  # (kind, name, user, group) -> hash, on demand


BASES_KEPT = 50_000  # Backups come and go; never grow without bound
FULL_RENDERS_KEPT = 64  # least recently used dropped (a workload's render is one Backup's)


class Renderer:
    """Renders the templates once per Backup (and image); workloads only fill in their name
    and the sidecar's user.

    Most cycles change nothing, so the hot path is ``config_hash``: a dict lookup per
    workload once its hash is known, else string replacements and a SHA-256; no template,
    no YAML.
    """

    def __init__(self, image: str = DEFAULT_IMAGE):
        self.image = image
        env = _environment()
        self._sidecar = env.get_template("sidecar.yaml.j2")
        self._volumes = env.get_template("volumes.yaml.j2")
        self._bases: dict[str, _Base] = {}
        self._full: OrderedDict[str, tuple[dict, tuple[dict, ...]]] = OrderedDict()
        self._blob: tuple[str | None, str] = (None, "")  # the last blob decompressed
        self._shapes = Shapes(_to_data)

    def config_hash(
        self,
        backup: Backup,
        workload_kind: str,
        workload_name: str,
        app: AppUser = UNKNOWN_USER,
    ) -> str:
        """``app``: who the workload's container with the source volume runs as
        (reconciler.controller.pod.app_user); it decides the sidecar's user, so it is in
        the hash."""
        key = backup.render_key
        base = self._bases.get(key)
        if base is None:
            self._full_render(backup)
            base = self._bases[key]
        user, group = sidecar_user(backup, app)
        hkey = (workload_kind, workload_name, user, group)
        hit = base.hashes.get(hkey)
        if hit is None:
            if self._blob[0] != key:
                self._blob = (key, zlib.decompress(base.blob).decode())
            ref = json.dumps(f"{workload_kind}/{workload_name}")[1:-1]
            blob = (
                self._blob[1]
                .replace(WORKLOAD_PLACEHOLDER, ref)
                .replace(f'"{USER_PLACEHOLDER}"', str(user))
                .replace(f'"{GROUP_PLACEHOLDER}"', str(group))
            )
            hit = hashlib.sha256(blob.encode()).hexdigest()[:16]
            base.hashes[hkey] = hit
        return hit

    def render(
        self,
        backup: Backup,
        workload_kind: str,
        workload_name: str,
        app: AppUser = UNKNOWN_USER,
    ) -> Rendered:
        base_container, base_volumes = self._full_render(backup)
        ref = f"{workload_kind}/{workload_name}"
        container = copy.deepcopy(base_container)
        container["args"] = [ref if a == WORKLOAD_PLACEHOLDER else a for a in container["args"]]
        security = container["securityContext"]
        security["runAsUser"], security["runAsGroup"] = sidecar_user(backup, app)
        volumes = copy.deepcopy(base_volumes)
        config = self.config_hash(backup, workload_kind, workload_name, app)
        return Rendered(container, volumes, config)

    def _full_render(self, backup: Backup) -> tuple[dict, tuple[dict, ...]]:
        """The Backup's container and volumes with the workload left open (never changed in
        place: render() copies them); its _Base made on the way."""
        key = backup.render_key
        full = self._full.get(key)
        if full is None:
            full = self._full[key] = self._render_base(backup)
            if len(self._full) > FULL_RENDERS_KEPT:
                self._full.popitem(last=False)
        else:
            self._full.move_to_end(key)
        if key not in self._bases:
            if len(self._bases) > BASES_KEPT:
                self._bases.clear()
            blob = zlib.compress(_canonical(*full).encode(), 1)
            self._bases[key] = _Base(blob)
        return full

    def _render_base(self, backup: Backup) -> tuple[dict, tuple[dict, ...]]:
        values = self._values(backup)
        container = self._shapes.render(self._sidecar, values)
        volumes = tuple(self._shapes.render(self._volumes, values))
        return container, volumes

    def render_text(self, backup: Backup) -> tuple[dict, tuple[dict, ...]]:
        """The base render (container, volumes) the plain way, every value parsed as YAML:
        what a render by shape must equal (tests compare them)."""
        values = self._values(backup)
        return render_text(self._sidecar, values), tuple(render_text(self._volumes, values))

    def _values(self, backup: Backup) -> dict:
        return {
            "backup": backup,
            "image": self.image,
            "container_name": SIDECAR_NAME,
            "workload_ref": WORKLOAD_PLACEHOLDER,
            "metrics_port": backup.metrics_port,
            "run_as_user": USER_PLACEHOLDER,
            "run_as_group": GROUP_PLACEHOLDER,
            "metrics_port_name": METRICS_PORT_NAME,
            "repo_volume": REPO_VOLUME,
            "repo_mount": REPO_MOUNT,
            "cache_volume": CACHE_VOLUME,
            "cache_mount": CACHE_MOUNT,
            "repository_file": REPOSITORY_FILE,
            "token_volume": TOKEN_VOLUME,
            "token_mount": TOKEN_MOUNT,
            "repo_volume_source": _repo_volume(backup),
            "password_key": SECRET_PASSWORD_KEY,
            "secret_env": SECRET_ENV,
        }


def sidecar_user(backup: Backup, app: AppUser = UNKNOWN_USER) -> tuple[int, int]:
    """(runAsUser, runAsGroup) of the sidecar: the Backup's spec.securityContext, field by
    field, else the application's (so it can read the files it backs up), else the image's
    65532. Never root: an application running as uid 0 gives 65532 (Pod Security
    "restricted" forbids uid 0); its group, even 0, is kept."""
    user = backup.run_as_user
    if user is None:
        user = app.user if app.user else DEFAULT_USER
    group = backup.run_as_group
    if group is None:
        group = app.group if app.group is not None else DEFAULT_USER
    return (user, group)


def _repo_volume(backup: Backup) -> dict | None:
    if backup.destination_volume is None:
        return None
    source = {k: v for k, v in backup.destination_volume.items() if k != "name"}
    return {"name": REPO_VOLUME, **source}
