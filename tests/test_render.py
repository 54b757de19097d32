"""The renderer: exact sidecar container and volumes, a stable config hash, hostile values
arriving verbatim (or the Backup rejected with a field path), no password in the output."""

from __future__ import annotations

import copy
import json

import pytest

from reconciler.api.backup import DEFAULT_RESOURCES, InvalidBackup, parse_backup
from reconciler.api.constants import (
    CACHE_VOLUME,
    REPO_VOLUME,
    SECRET_ENV,
    SIDECAR_NAME,
    TOKEN_MOUNT,
)
from reconciler.controller.pod import AppUser
from reconciler.controller.render import DEFAULT_IMAGE, Renderer, config_hash, templates_dir
from tests.factories import REPO, backup

PASSWORD = "s3cr3t-Pa55word"  # a value that must never show up


def render(raw: dict, kind="Deployment", name="app", image=DEFAULT_IMAGE):
    return Renderer(image=image).render(parse_backup(raw), kind, name)


# The sidecar's own service-account token, projected exactly as automount does it.
TOKEN_VOLUME = {
    "name": "restik-token",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {
                "configMap": {
                    "name": "kube-root-ca.crt",
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }
            },
            {
                "downwardAPI": {
                    "items": [
                        {
                            "path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                        }
                    ]
                }
            },
        ],
    },
}


def expected_container(*, local: bool, image=DEFAULT_IMAGE, resources=None) -> dict:
    mounts = [{"name": "data", "mountPath": "/data", "readOnly": True}]
    if local:
        mounts.append({"name": "restik-repo", "mountPath": "/restik/repo"})
    mounts.append({"name": "restik-cache", "mountPath": "/restik/cache"})
    mounts.append({"name": "restik-token", "mountPath": TOKEN_MOUNT, "readOnly": True})
    return {
        "name": "restik",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "watch",
            "--backup",
            "www",
            "--workload",
            "Deployment/app",
            "--metrics-port",
            "9464",
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "POD_NAMESPACE",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {
                "name": "RESTIC_PASSWORD",
                "valueFrom": {
                    "secretKeyRef": {"name": "www-restic", "key": "password", "optional": True}
                },
            },
            *(
                {
                    "name": name,
                    "valueFrom": {
                        "secretKeyRef": {"name": "www-restic", "key": name, "optional": True}
                    },
                }
                for name in SECRET_ENV
            ),
            {"name": "RESTIC_CACHE_DIR", "value": "/restik/cache"},
            {"name": "TMPDIR", "value": "/restik/cache"},
            {"name": "RESTIC_REPOSITORY_FILE", "value": "/restik/cache/repository"},
            {"name": "RESTIC_REPOSITORY", "value": ""},
        ],
        "ports": [{"name": "restik-metrics", "containerPort": 9464, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "restik-metrics"},
            "initialDelaySeconds": 10,
            "periodSeconds": 30,
            "failureThreshold": 4,
        },
        "resources": resources or DEFAULT_RESOURCES,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }


def test_local_backup_renders_container_and_volumes():
    out = render(backup())
    assert out.container == expected_container(local=True)
    assert out.volumes == (
        {"name": "restik-cache", "emptyDir": {}},
        {"name": "restik-repo", "persistentVolumeClaim": {"claimName": "backups"}},
        TOKEN_VOLUME,
    )
    assert out.config_hash == config_hash(out.container, out.volumes)
    assert len(out.config_hash) == 16


def test_remote_backup_renders_no_repo_volume():
    out = render(backup(repository="s3:http://minio:9000/b"))
    assert out.container == expected_container(local=False)
    assert out.volumes == ({"name": "restik-cache", "emptyDir": {}}, TOKEN_VOLUME)
    assert REPO_VOLUME not in json.dumps(out.container)


def test_named_destination_volume_is_renamed_restik_repo():
    out = render(backup(volume={"name": "mine", "persistentVolumeClaim": {"claimName": "x"}}))
    assert out.volumes[1] == {"name": "restik-repo", "persistentVolumeClaim": {"claimName": "x"}}


def test_resources_image_and_workload_reach_the_container():
    # 40000000 bytes: an integer quantity arrives as a string (and is within bounds)
    raw = backup(
        resources={"limits": {"cpu": "500m", "memory": 40000000}, "requests": {"cpu": "1m"}}
    )
    out = render(raw, kind="StatefulSet", name="pg", image="reg.example/restik:9")
    assert out.container["image"] == "reg.example/restik:9"
    assert out.container["resources"] == {
        "limits": {"cpu": "500m", "memory": "40000000"},
        "requests": {"cpu": "1m", "memory": "40000000"},
    }
    assert out.container["args"][4] == "StatefulSet/pg"


def test_password_is_only_referenced():
    out = render(backup())
    for env in out.container["env"]:
        if env["name"] == "RESTIC_PASSWORD":
            assert set(env) == {"name", "valueFrom"}
            assert env["valueFrom"] == {
                "secretKeyRef": {"name": "www-restic", "key": "password", "optional": True}
            }
    text = json.dumps([out.container, out.volumes])
    assert PASSWORD not in text
    assert "password" not in json.dumps(out.container["args"]).lower()
    values = [e.get("value") for e in out.container["env"] if "value" in e]
    assert values == ["/restik/cache", "/restik/cache", "/restik/cache/repository", ""]


@pytest.mark.parametrize("kind", ["DaemonSet", "StatefulSet", "Deployment"])
def test_sidecar_knows_its_node_and_workload_kind(kind):
    """The sidecar picks the restic host by kind: the node name for a DaemonSet's pods."""
    out = render(backup(), kind=kind, name="agent")
    env = {e["name"]: e for e in out.container["env"]}
    assert env["NODE_NAME"] == {
        "name": "NODE_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
    }
    args = out.container["args"]
    assert args[args.index("--workload") + 1] == f"{kind}/agent"


def test_templates_are_found_in_the_source_tree():
    d = templates_dir()
    assert (d / "sidecar.yaml.j2").is_file()
    assert (d / "volumes.yaml.j2").is_file()
    assert d.resolve() == (REPO / "templates").resolve()


# ---------------------------------------------------------------- the config hash


def test_hash_is_stable():
    a = render(backup())
    b = Renderer().render(parse_backup(copy.deepcopy(backup())), "Deployment", "app")
    assert a.config_hash == b.config_hash
    assert a == b


def test_hash_ignores_key_order():
    c = {"b": 1, "a": [1, 2]}
    assert config_hash(c, [{"y": 1, "x": 2}]) == config_hash(
        dict(reversed(c.items())), [{"x": 2, "y": 1}]
    )


BASE_HASH_INPUT = {"raw": backup(), "kind": "Deployment", "name": "app", "image": DEFAULT_IMAGE}

RENDERED_INPUT_CHANGES = {
    "source-path": {"raw": backup(path="/srv")},
    "source-volume": {"raw": backup(volume_name="other")},
    "secret": {"raw": backup(secret="other-restic")},
    "backup-name": {"raw": backup(name="other")},
    "destination-volume": {"raw": backup(volume={"persistentVolumeClaim": {"claimName": "other"}})},
    "remote-instead-of-local": {"raw": backup(repository="s3:host/b")},
    "resources": {"raw": backup(resources={"limits": {"memory": "1Gi"}})},
    "image": {"image": "restik:9.9"},
    "workload-name": {"name": "other"},
    "workload-kind": {"kind": "StatefulSet"},
}
LIVE_INPUT_CHANGES = {
    "schedule": backup(schedule="0 */30 * * * *"),
    "retention": backup(retentionPolicy={"keepLastSnapshots": 3, "prune": True}),
    "tags": backup(tags=["x", "y"]),
    "excludes": backup(excludes=["*.log"]),
    "paused": backup(paused=True),
    "dest-path": backup(dest_path="/elsewhere"),
}


def _hash(**overrides) -> str:
    args = {**BASE_HASH_INPUT, **overrides}
    return render(args["raw"], args["kind"], args["name"], args["image"]).config_hash


@pytest.mark.parametrize(
    "overrides", RENDERED_INPUT_CHANGES.values(), ids=RENDERED_INPUT_CHANGES.keys()
)
def test_hash_changes_with_a_rendered_input(overrides):
    assert _hash(**overrides) != _hash()


@pytest.mark.parametrize("raw", LIVE_INPUT_CHANGES.values(), ids=LIVE_INPUT_CHANGES.keys())
def test_hash_ignores_what_the_sidecar_reads_live(raw):
    assert _hash(raw=raw) == _hash()


def test_remote_repository_change_is_read_live():
    a = render(backup(repository="s3:host/a"))
    b = render(backup(repository="rest:http://host/b"))
    assert a.config_hash == b.config_hash


def test_hash_changes_with_the_sidecar_user():
    b = parse_backup(backup())
    r = Renderer()
    hashes = {
        r.config_hash(b, "Deployment", "app", app)
        for app in (AppUser(), AppUser(999, None), AppUser(999, 999), AppUser(None, 0))
    }
    assert len(hashes) == 4
    # an app running as root gives the default user: the same rendering as nothing known
    assert r.config_hash(b, "Deployment", "app", AppUser(0, None)) == r.config_hash(
        b, "Deployment", "app"
    )


def test_backup_security_context_overrides_the_app_per_field():
    b = parse_backup(backup(securityContext={"runAsUser": 5}))
    out = Renderer().render(b, "Deployment", "app", AppUser(999, 998))
    assert (
        out.container["securityContext"]["runAsUser"],
        out.container["securityContext"]["runAsGroup"],
    ) == (5, 998)
    both = parse_backup(backup(securityContext={"runAsUser": 5, "runAsGroup": 6}))
    r = Renderer()
    assert r.config_hash(both, "Deployment", "app", AppUser(999, 998)) == r.config_hash(
        both, "Deployment", "app"
    )


def test_renderer_cache_never_returns_a_stale_render():
    shared = Renderer()
    for overrides in RENDERED_INPUT_CHANGES.values():
        args = {**BASE_HASH_INPUT, **overrides}
        if args["image"] != DEFAULT_IMAGE:
            continue
        b = parse_backup(args["raw"])
        cached = shared.render(b, args["kind"], args["name"])
        assert cached == Renderer().render(b, args["kind"], args["name"])


# ---------------------------------------------------------------- hostile values

HOSTILE = [
    "{{ x }}",
    "{{ 7*7 }}",
    "{% raw %}",
    "{% endraw %}{{ backup }}",
    "{# comment #}",
    '"',
    "'",
    "\"'\\",
    "': #",
    "a: b",
    "x # comment",
    "!!python/object/apply:os.system ['touch /tmp/pwn']",
    "!!binary aGk=",
    "&anchor *alias",
    "*alias",
    "- item",
    "? key",
    "| block",
    "> folded",
    "%YAML 1.1",
    "---",
    "...",
    "--flag",
    "--backup=other",
    "${HOME} $(id) `id`",
    "<script>&amp;</script>",
    "null",
    "true",
    "0x1F",
    "1e3",
    "~",
    "é ü ß 中文 ٱ",
    "😀 🎉",
    "tab\there",
    "line\nbreak",
    "cr\rreturn",
    "nul\x00byte",
    "\u2028\u2029\x85",
    "x" * 4000,
    "y" * 5000,
    "  padded  ",
    "",
]


def _shape(node):
    """The structure of rendered data: keys and list lengths, not the string values."""
    if isinstance(node, dict):
        return {k: _shape(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [_shape(v) for v in node]
    return type(node).__name__


BASELINE = render(backup())

# field -> (build the raw Backup from the hostile value, field path, where it must arrive)
FIELDS = {
    "backupSource.path": (
        lambda h: backup(path="/" + h),
        "spec.backupSource.path",
        lambda out: out.container["volumeMounts"][0]["mountPath"],
        lambda h: "/" + h,
    ),
    "backupSource.volumeName": (
        lambda h: backup(volume_name=h),
        "spec.backupSource.volumeName",
        lambda out: out.container["volumeMounts"][0]["name"],
        lambda h: h,
    ),
    "metadata.name": (
        lambda h: backup(name=h),
        "metadata.name",
        lambda out: out.container["args"][2],
        lambda h: h,
    ),
    "repositorySecretName": (
        lambda h: backup(secret=h),
        "spec.destination.repositorySecretName",
        lambda out: out.container["env"][3]["valueFrom"]["secretKeyRef"]["name"],
        lambda h: h,
    ),
    "destination.volume.claimName": (
        lambda h: backup(volume={"persistentVolumeClaim": {"claimName": h}}),
        "spec.destination.volume",
        lambda out: out.volumes[1]["persistentVolumeClaim"]["claimName"],
        lambda h: h,
    ),
    "resources.limits.cpu": (
        lambda h: backup(resources={"limits": {"cpu": h}}),
        "spec.resources.limits.cpu",
        lambda out: out.container["resources"]["limits"]["cpu"],
        lambda h: h,
    ),
}


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
@pytest.mark.parametrize("field", FIELDS.values(), ids=FIELDS.keys())
def test_hostile_backup_values_arrive_verbatim_or_are_rejected(field, hostile):
    build, path, locate, expected = field
    try:
        b = parse_backup(build(hostile))
    except InvalidBackup as exc:
        assert any(e.path.startswith(path) for e in exc.errors), exc.errors
        return
    out = Renderer().render(b, "Deployment", "app")
    assert locate(out) == expected(hostile)
    if path != "spec.resources.limits.cpu":
        assert _shape(out.container) == _shape(BASELINE.container)
        assert _shape(out.volumes) == _shape(BASELINE.volumes)
    assert out.container["name"] == SIDECAR_NAME
    assert out.volumes[0] == {"name": CACHE_VOLUME, "emptyDir": {}}


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
def test_hostile_workload_name_and_image_arrive_verbatim(hostile):
    out = Renderer(image=hostile).render(parse_backup(backup()), "Deployment", hostile)
    assert out.container["image"] == hostile
    assert out.container["args"][3:5] == ["--workload", f"Deployment/{hostile}"]
    assert _shape(out.container) == _shape(BASELINE.container)
    assert _shape(out.volumes) == _shape(BASELINE.volumes)


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
def test_hostile_values_that_are_read_live_never_reach_the_container(hostile):
    raw = backup(tags=[hostile], excludes=[hostile], schedule="@hourly")
    raw["spec"]["destination"] = {
        "repositorySecretName": "www-restic",
        "repository": "/r" + hostile,
    }
    try:
        b = parse_backup(raw)
    except InvalidBackup as exc:
        assert {e.path for e in exc.errors} <= {
            "spec.tags[0]",
            "spec.excludes[0]",
            "spec.destination.repository",
        }
        return
    out = Renderer().render(b, "Deployment", "app")
    assert out == render(backup(repository="/r"))


# ---------------------------------------------------------------- the fast path


@pytest.mark.parametrize(
    "name",
    ["app", 'we"ird', "back\\slash", "tab\tname", "ünïcødé", "😀 🎉", "x" * 300, "@@"],
    ids=repr,
)
@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_the_hash_the_planner_compares_is_the_hash_of_what_is_injected(kind, name):
    renderer = Renderer()
    b = parse_backup(backup())
    fast = renderer.config_hash(b, kind, name)  # the steady-state check, before any render
    out = renderer.render(b, kind, name)
    assert out.container["args"][4] == f"{kind}/{name}"
    assert fast == out.config_hash == config_hash(out.container, out.volumes)
    assert fast == Renderer().render(b, kind, name).config_hash
    assert len(fast) == 16 and int(fast, 16) >= 0


def test_each_workload_has_its_own_hash():
    renderer = Renderer()
    b = parse_backup(backup())
    hashes = {
        renderer.config_hash(b, kind, name)
        for kind in ("Deployment", "StatefulSet")
        for name in ("a", "b")
    }
    assert len(hashes) == 4
    assert renderer.config_hash(b, "Deployment", "a") in hashes


class CountingRenderer(Renderer):
    """Counts template renders (one per Backup content is the promise)."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.renders = 0

    def _render_base(self, backup):
        self.renders += 1
        return super()._render_base(backup)


def test_a_backup_is_rendered_once_for_all_its_workloads_and_cycles():
    renderer = CountingRenderer()
    for _cycle in range(3):
        b = parse_backup(backup())  # parsed anew every cycle
        for name in ("a", "b", "c"):
            renderer.config_hash(b, "Deployment", name)
            renderer.render(b, "Deployment", name)
        # what the sidecar reads live does not need a new render either
        renderer.render(parse_backup(backup(schedule="@daily", tags=["x"])), "Deployment", "a")
    assert renderer.renders == 1
    renderer.render(parse_backup(backup(path="/srv")), "Deployment", "a")
    assert renderer.renders == 2
    renderer.config_hash(parse_backup(backup()), "Deployment", "d")  # both stay cached
    assert renderer.renders == 2


def test_the_same_backup_written_in_another_key_order_is_not_rendered_again():
    renderer = CountingRenderer()
    limits = {"cpu": "1", "memory": "1Gi"}
    volume = {"persistentVolumeClaim": {"claimName": "nas", "readOnly": True}}
    swapped = {"persistentVolumeClaim": {"readOnly": True, "claimName": "nas"}}
    one = parse_backup(backup(resources={"limits": limits}, volume=volume))
    other = parse_backup(
        backup(resources={"limits": dict(reversed(limits.items()))}, volume=swapped)
    )
    assert renderer.render(one, "Deployment", "a") == renderer.render(other, "Deployment", "a")
    assert renderer.renders == 1


def test_a_render_is_a_copy_the_caller_may_change():
    renderer = Renderer()
    b = parse_backup(backup())
    first = renderer.render(b, "Deployment", "app")
    first.container["args"].append("--changed")
    first.volumes[0]["emptyDir"]["medium"] = "Memory"
    assert renderer.render(b, "Deployment", "app") == render(backup())


def test_the_metrics_port_reaches_the_args_and_the_port():
    # the port is per Backup (spec.metricsPort, issue 12 item 5)
    out = Renderer().render(parse_backup(backup(metricsPort=9999)), "Deployment", "app")
    args = out.container["args"]
    assert args[args.index("--metrics-port") + 1] == "9999"
    assert out.container["ports"] == [
        {"name": "restik-metrics", "containerPort": 9999, "protocol": "TCP"}
    ]
    assert out.config_hash != render(backup()).config_hash


def test_a_render_cannot_be_changed_in_place_by_its_users():
    out = render(backup())
    with pytest.raises(AttributeError):
        out.config_hash = "0" * 16


def test_the_templates_are_read_once_for_all_renderers(monkeypatch):
    # The offline commands and the KRM function build renderers freely: one read each.
    import jinja2

    reads = []
    original = jinja2.FileSystemLoader.get_source

    def counting(self, environment, template):
        reads.append(template)
        return original(self, environment, template)

    monkeypatch.setattr(jinja2.FileSystemLoader, "get_source", counting)
    b = parse_backup(backup(name="fresh-name"))
    for image in ("a:1", "b:2", "c:3"):
        Renderer(image=image).render(b, "Deployment", "app")
    assert len(reads) <= 2, reads  # sidecar.yaml.j2 and volumes.yaml.j2, at most once


def test_the_render_cache_is_bounded():
    renderer = CountingRenderer()
    # Stand-ins for 50,000 cached Backups (rendering that many would take minutes).
    renderer._bases.update((f"stand-in-{i}", None) for i in range(50_000))
    renderer.render(parse_backup(backup(name="one")), "Deployment", "app")
    assert len(renderer._bases) == 50_001, "at the bound nothing is dropped yet"
    renderer.render(parse_backup(backup(name="two")), "Deployment", "app")
    assert len(renderer._bases) == 1, "past it the cache starts over"
    assert renderer.renders == 2


@pytest.mark.parametrize(
    "source",
    [
        {"persistentVolumeClaim": {"claimName": "backups"}},
        {"persistentVolumeClaim": {"claimName": "backups", "readOnly": True}},
    ],
    ids=["claim", "read-only"],
)
def test_any_named_destination_volume_arrives_as_restik_repo(source):
    # As the API server sends it: decoded from JSON.
    raw = json.loads(json.dumps(backup(volume={"name": "mine", **source})))
    out = Renderer().render(parse_backup(raw), "Deployment", "app")
    assert out.volumes[1] == {"name": REPO_VOLUME, **source}


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
def test_libyaml_and_pure_loaders_read_every_render_alike(hostile, monkeypatch):
    """Renders are parsed with libyaml (fast) when PyYAML has it; the pure ruamel.yaml
    loader is the fallback. Both must give the same data for any Backup value."""
    from reconciler.controller import render as module

    assert module._LIBYAML is not None  # the test dependencies ship PyYAML with libyaml
    texts = []
    real = module._to_data
    monkeypatch.setattr(module, "_to_data", lambda text: texts.append(text) or real(text))
    # the workload's name takes any value (the Backup's rules refuse some in every field)
    Renderer().render(parse_backup(backup()), "Deployment", hostile or "x")
    for build, *_ in FIELDS.values():
        try:
            b = parse_backup(build(hostile))
        except InvalidBackup:
            continue
        Renderer().render(b, "Deployment", hostile or "x")
        Renderer().render_text(b)  # the plain way: the hostile value in the parsed text
    assert texts
    for text in texts:
        assert real(text) == module._to_data_pure(text)


# ---------------------------------------------------------------- renders by shape


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: repr(h)[:30])
def test_a_render_by_shape_equals_the_plain_render(hostile):
    """The renderer parses one text per template shape and fills the values in; the result is
    exactly the plain render's (every value in the text, the text parsed as YAML)."""
    renderer = Renderer(image=hostile or "x")
    raws = [backup(), backup(resources={"limits": {"cpu": "2"}}, volume_name="other")]
    for build, *_ in FIELDS.values():
        raws.append(build(hostile))
    for raw in raws:
        try:
            b = parse_backup(raw)
        except InvalidBackup:
            continue
        assert renderer._render_base(b) == renderer.render_text(b)


def test_a_template_shape_is_parsed_once_for_all_backups(monkeypatch):
    from reconciler.controller import render as module

    texts = []
    real = module._to_data
    monkeypatch.setattr(module, "_to_data", lambda text: texts.append(text) or real(text))
    renderer = Renderer()
    for i in range(20):
        raw = backup(name=f"b{i}", secret=f"s{i}", path=f"/data/{i}")
        renderer.render(parse_backup(raw), "StatefulSet", f"db{i}")
    assert len(texts) == 2  # the sidecar's shape and the volumes' shape
    # another shape (a remote repository: no repository volume) is parsed once more
    renderer.render(parse_backup(backup(repository="s3:http://minio:9000/b")), "Deployment", "a")
    assert len(texts) == 4


@pytest.mark.parametrize(
    "source, values",
    [
        # a value inside a longer scalar: not filled in, the plain render is used
        ("a: x{{ v | tojson }}\nb: {{ w | tojson }}\n", {"v": "1", "w": [1, "2"]}),
        ("{{ v | tojson }}: {{ w | tojson }}\n", {"v": "key", "w": None}),
        # values whose YAML reading differs from JSON's stay in the text
        ("a: {{ v | tojson }}\nb: {{ w | tojson }}\n", {"v": 1e20, "w": 1.5}),
        ("a: {{ v | tojson }}\n", {"v": {"k": [True, 0, -3, "é😀"]}}),
        ("a: {{ v | tojson }}\nb: {{ w | tojson }}\n", {"v": "\ud83d", "w": {"\ud83d": 1}}),
        ("a: {{ v | tojson(indent=2) }}\n", {"v": {"x": 1}}),
    ],
)
def test_shapes_fall_back_to_the_plain_render_where_a_fill_could_differ(source, values):
    from reconciler.controller.render import _environment, _to_data, render_text
    from reconciler.controller.shapes import Shapes

    template = _environment().from_string(source)
    try:
        expected = render_text(template, values)
    except Exception as exc:  # what the plain render refuses, the shaped one refuses too
        with pytest.raises(type(exc)):
            Shapes(_to_data).render(template, values)
        return
    shapes = Shapes(_to_data)
    assert shapes.render(template, values) == expected
    assert shapes.render(template, values) == expected  # from the kept parse


def test_a_value_looking_like_a_token_is_only_a_value():
    from reconciler.controller import render as module
    from reconciler.controller import shapes as shaped

    shapes = shaped.Shapes(module._to_data)
    template = module._environment().from_string("a: {{ v | tojson }}\nb: {{ w | tojson }}\n")
    fake = f"{shaped._TOKEN}1@@"  # what a Backup cannot know: the token's random part
    assert shapes.render(template, {"v": fake, "w": "x"}) == {"a": fake, "b": "x"}


def test_only_the_last_renders_are_kept_whole_and_hashes_need_none():
    """At 5,000 Backups the rendered containers were most of the controller's memory: only
    the hash blob (compressed) stays per Backup, whole renders only for the last few."""
    from reconciler.controller.render import FULL_RENDERS_KEPT

    renderer = CountingRenderer()
    backups = [parse_backup(backup(name=f"b{i}", secret=f"s{i}")) for i in range(100)]
    for b in backups:
        renderer.config_hash(b, "Deployment", "one")
    assert renderer.renders == 100
    assert len(renderer._full) == FULL_RENDERS_KEPT < 100
    # a new workload of a Backup rendered long ago: its hash from the kept blob, no render
    fresh = Renderer()
    for b in backups[:5]:
        for kind, name in (("StatefulSet", "db"), ("DaemonSet", "agent")):
            assert renderer.config_hash(b, kind, name) == fresh.config_hash(b, kind, name)
    assert renderer.renders == 100
    # its whole render comes back on demand, the same as ever
    out = renderer.render(backups[0], "Deployment", "two")
    assert renderer.renders == 101
    assert out == fresh.render(backups[0], "Deployment", "two")
    assert out.config_hash == config_hash(out.container, out.volumes)
