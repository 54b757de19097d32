"""`restik diff` / `restik inject` on files and stdin, as a subprocess and through main()."""

from __future__ import annotations

import difflib
import io
import os
import subprocess
import sys
import textwrap

import pytest
from ruamel.yaml import YAML

from reconciler import cli
from reconciler.api.constants import CONFIG_LABEL
from tests.factories import EXAMPLES, REPO, load_all

LABEL_LINE = f"{CONFIG_LABEL}: www"


def restik(*args, stdin: str | None = None, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RESTIK_SIDECAR_IMAGE", None)
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


def run_main(capsys, monkeypatch, *args, stdin: str | None = None):
    monkeypatch.delenv("RESTIK_SIDECAR_IMAGE", raising=False)
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


BACKUP = """\
apiVersion: backup.appscode.com/v1beta1
kind: Backup
metadata:
  name: www
  namespace: web
spec:
  schedule: "@hourly"
  backupSource: {volumeName: data, path: /var/www}
  destination:
    repositorySecretName: www-restic
    repository: "s3:http://minio:9000/b"
"""

# Comments, a non-alphabetical key order, both quote styles and a flow mapping.
USER_DEPLOYMENT = """\
# The web server.
kind: Deployment            # kind first on purpose
apiVersion: apps/v1
metadata:
  namespace: web
  name: www
  labels:
    backup.appscode.com/config: www   # opt in
    tier: 'frontend'
  annotations:
    note: "double quoted"
spec:
  replicas: 2
  selector:
    matchLabels: {app: www}
  template:
    metadata:
      labels: {app: www}
      annotations:
        z-last: 'single'
        a-first: "double"
    spec:
      # the app itself
      containers:
      - name: nginx
        image: 'nginx:1.27'
        args: ["-g", 'daemon off;']
      volumes:
      - name: data            # the data
        emptyDir: {}
"""

# 4-space indentation with indented sequences ("  - ").
INDENTED_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
    name: www
    namespace: web
    labels:
        backup.appscode.com/config: www
spec:
    selector:
        matchLabels:
            app: www
    template:
        metadata:
            labels:
                app: www
        spec:
            containers:
              - name: nginx
                image: nginx:1.27
            volumes:
              - name: data
                emptyDir: {}
"""

PASSTHROUGH = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web
data:
  key: 'value'   # kept
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: unlabeled
  namespace: web
spec:
  template:
    spec:
      containers:
      - name: app
        image: app
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def removed_lines(before: str, after: str) -> list[str]:
    """Lines of ``before`` missing from ``after`` (inject may only add lines)."""
    return [
        line
        for line in difflib.ndiff(before.splitlines(), after.splitlines())
        if line.startswith("- ")
    ]


# ---------------------------------------------------------------- the examples


def test_diff_on_examples_exits_1_with_kubectl_style_diffs():
    proc = restik("diff", "-f", "examples/")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    for name in ("apps.v1.Deployment.web.www", "apps.v1.StatefulSet.db.pg"):
        assert f"diff -u -N a/{name} b/{name}\n--- a/{name}\n+++ b/{name}\n@@ " in out
    added = [line[1:] for line in out.splitlines() if line.startswith("+") and line[1:2] != "+"]
    assert "      - name: restik" in added
    assert "          claimName: backups" in added
    assert not [line for line in out.splitlines() if line.startswith("-") and line[1:2] != "-"]


def test_inject_then_diff_exits_0_and_inject_is_idempotent(tmp_path):
    first = restik("inject", "-f", "examples/")
    assert first.returncode == 0, first.stderr
    injected = write(tmp_path, "injected.yaml", first.stdout)
    again = restik("diff", "-f", str(injected))
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    second = restik("inject", "-f", str(injected))
    assert second.returncode == 0
    assert second.stdout == first.stdout


def test_diff_and_inject_through_main(capsys, monkeypatch, tmp_path):
    code, out, err = run_main(capsys, monkeypatch, "diff", "-f", str(EXAMPLES))
    assert code == 1 and "diff -u -N" in out and err == ""
    code, injected, err = run_main(capsys, monkeypatch, "inject", "-f", str(EXAMPLES))
    assert code == 0 and err == ""
    path = write(tmp_path, "all.yaml", injected)
    assert run_main(capsys, monkeypatch, "diff", "-f", str(path)) == (0, "", "")
    assert run_main(capsys, monkeypatch, "inject", "-f", str(path)) == (0, injected, "")


def test_diff_on_an_example_file_is_the_same_through_main_and_subprocess(capsys, monkeypatch):
    _, out, _ = run_main(capsys, monkeypatch, "diff", "-f", "examples/")
    assert restik("diff", "-f", "examples/").stdout == out


# ---------------------------------------------------------------- round-trip fidelity


def test_comments_key_order_and_quotes_survive_inject(tmp_path):
    path = write(tmp_path, "app.yaml", BACKUP + "---\n" + USER_DEPLOYMENT)
    proc = restik("inject", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    before = BACKUP + "---\n" + USER_DEPLOYMENT
    assert removed_lines(before, proc.stdout) == []
    added = [
        line[2:] for line in difflib.ndiff(before.splitlines(), proc.stdout.splitlines())
        if line.startswith("+ ")
    ]  # fmt: skip
    assert "      - name: restik" in added
    assert any("backup.appscode.com/config-hash:" in line for line in added)


def test_indented_sequence_style_is_preserved(tmp_path):
    path = write(tmp_path, "app.yaml", INDENTED_DEPLOYMENT)
    backup = write(tmp_path, "backup.yaml", BACKUP)
    proc = restik("inject", "-f", str(path), "-f", str(backup))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert removed_lines(INDENTED_DEPLOYMENT, out.split("---\n")[0]) == []
    assert "              - name: restik\n" in out
    assert "                image: restik:" in out
    assert "              - name: restik-cache\n" in out
    assert "                emptyDir: {}\n" in out
    # the Backup's file keeps its own (2-space) style
    assert out.split("---\n")[1] == BACKUP


def test_objects_that_are_not_labeled_workloads_pass_through(tmp_path):
    path = write(tmp_path, "other.yaml", PASSTHROUGH)
    proc = restik("inject", "-f", str(path))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, PASSTHROUGH, "")
    assert restik("diff", "-f", str(path)).returncode == 0


def test_unlabeling_an_injected_workload_gives_back_the_original(tmp_path):
    original = BACKUP + "---\n" + USER_DEPLOYMENT
    injected = restik("inject", "-f", str(write(tmp_path, "a.yaml", original))).stdout
    label = "    backup.appscode.com/config: www   # opt in\n"
    assert label in injected
    unlabeled = injected.replace(label, "")
    path = write(tmp_path, "b.yaml", unlabeled)
    diff = restik("diff", "-f", str(path))
    assert diff.returncode == 1
    assert "-      - name: restik" in diff.stdout
    proc = restik("inject", "-f", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == original.replace(label, "")


def test_stdin(tmp_path):
    text = BACKUP + "---\n" + USER_DEPLOYMENT
    proc = restik("inject", "-f", "-", stdin=text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == restik("inject", "-f", str(write(tmp_path, "x.yaml", text))).stdout
    diff = restik("diff", "-f", "-", stdin=text)
    assert diff.returncode == 1
    assert "a/apps.v1.Deployment.web.www" in diff.stdout
    assert restik("diff", "-f", "-", stdin=proc.stdout).returncode == 0


def test_stdin_through_main(capsys, monkeypatch):
    text = BACKUP + "---\n" + USER_DEPLOYMENT
    code, out, err = run_main(capsys, monkeypatch, "inject", "-f", "-", stdin=text)
    assert code == 0 and err == "" and "- name: restik" in out
    assert run_main(capsys, monkeypatch, "diff", "-f", "-", stdin=out) == (0, "", "")


def test_image_option(tmp_path):
    proc = restik("inject", "-f", "examples/", "--image", "reg.example/restik:7")
    assert proc.returncode == 0
    assert proc.stdout.count("image: reg.example/restik:7") >= 2


def test_missing_backup_is_a_warning_and_leaves_the_workload(tmp_path):
    path = write(tmp_path, "app.yaml", USER_DEPLOYMENT)
    proc = restik("inject", "-f", str(path))
    assert proc.returncode == 0
    assert proc.stdout == USER_DEPLOYMENT
    assert "warning" in proc.stderr and "Backup web/www not found" in proc.stderr


def test_strict_diff_fails_on_a_label_naming_a_missing_backup(tmp_path):
    """A typo in the label: a warning with the closest name; --strict makes CI fail (exit 2)."""
    typo = USER_DEPLOYMENT.replace(
        "backup.appscode.com/config: www", "backup.appscode.com/config: wwww"
    )
    assert typo != USER_DEPLOYMENT
    write(tmp_path, "app.yaml", typo)
    write(tmp_path, "backup.yaml", BACKUP)
    lenient = restik("diff", "-f", str(tmp_path))
    assert lenient.returncode == 0, lenient.stderr
    assert "Backup web/wwww not found (did you mean 'www'?)" in lenient.stderr
    strict = restik("diff", "--strict", "-f", str(tmp_path))
    assert strict.returncode == 2
    assert "did you mean 'www'?" in strict.stderr
    fine = write(tmp_path, "app.yaml", USER_DEPLOYMENT)
    assert fine.exists()
    assert restik("diff", "--strict", "-f", str(tmp_path)).returncode == 1  # changes, no warning


def test_owned_workload_is_left_alone_with_a_warning(tmp_path):
    """Issue 12 item 1: a ReplicaSet of a Deployment that inherited the label."""
    rs = (
        USER_DEPLOYMENT.replace("kind: Deployment ", "kind: ReplicaSet ")
        .replace("  name: www\n", "  name: www-5d8f\n", 1)
        .replace(
            "  annotations:\n    note:",
            "  ownerReferences:\n  - {apiVersion: apps/v1, kind: Deployment, name: www,"
            " uid: u1, controller: true}\n  annotations:\n    note:",
            1,
        )
    )
    path = write(tmp_path, "app.yaml", BACKUP + "---\n" + rs)
    for command in ("inject", "diff"):
        proc = restik(command, "-f", str(path))
        assert proc.returncode == 0, proc.stderr
        assert "label the Deployment, not its ReplicaSet" in proc.stderr
        assert f"{path} (document 2): " in proc.stderr and "ReplicaSet/web/www-5d8f" in proc.stderr
    assert restik("inject", "-f", str(path)).stdout == BACKUP + "---\n" + rs


def test_a_users_container_named_restik_exits_2_naming_file_object_and_field(tmp_path):
    """Issue 12 item 11: a clash is an error, never an overwrite."""
    text = USER_DEPLOYMENT.replace("      - name: nginx\n", "      - name: restik\n")
    path = write(tmp_path, "app.yaml", BACKUP + "---\n" + text)
    for command in ("inject", "diff"):
        proc = restik(command, "-f", str(path))
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert f"{path} (document 2): " in proc.stderr and "Deployment/web/www" in proc.stderr
        assert "spec.template.spec.containers[0].name" in proc.stderr


# ---------------------------------------------------------------- hostile or broken input

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n  namespace: web\n"
BROKEN = {
    "unparseable": ("a: [b\n", ["not valid YAML"]),
    "python-tag": (
        CONFIGMAP + 'data:\n  a: !!python/object/apply:os.system ["touch {marker}"]\n',
        ["(document 1)", "data.a", "YAML tags are not allowed"],
    ),
    "python-tag-document": (
        '!!python/object/apply:os.system ["touch {marker}"]\n',
        ["(document 1)", "YAML tags are not allowed"],
    ),
    "python-name": ("!!python/name:os.system\n", ["(document 1)"]),
    "custom-tag": (CONFIGMAP + "data:\n  a: !foo bar\n", ["(document 1)", "data.a", "!foo"]),
    "custom-tag-mapping": (CONFIGMAP + "data: !foo {a: b}\n", ["(document 1)", "data"]),
    "scalar-document": ("just a string\n", ["(document 1)", "must be a mapping"]),
    "list-document": ("- a\n- b\n", ["(document 1)", "must be a mapping, got a list"]),
    "second-document-bad": (CONFIGMAP + "---\n- a\n", ["(document 2)", "must be a mapping"]),
    "missing-kind": ("apiVersion: v1\nmetadata:\n  name: x\n", ["(document 1)", "kind"]),
    "missing-name": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: x\n",
        ["(document 1)", "ConfigMap", "metadata.name"],
    ),
    "missing-metadata": ("apiVersion: v1\nkind: ConfigMap\n", ["ConfigMap", "metadata"]),
    "duplicate-objects": (
        CONFIGMAP + "---\n" + CONFIGMAP,
        ["(document 2)", "ConfigMap web/cm", "duplicate", "(document 1)"],
    ),
    "duplicate-keys": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  name: y\n",
        ["duplicate key 'name'", "line 5"],
    ),
    "duplicate-secret-key-hides-values": (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"
        "stringData:\n  password: hunter2\n  password: hunter3\n",
        ["duplicate key 'password'", "line 7"],
    ),
    "non-string-key": (CONFIGMAP + "data:\n  1: a\n", ["data", "keys must be strings"]),
    "invalid-backup": (
        BACKUP.replace('"@hourly"', '"61 * * * *"'),
        ["(document 1)", "Backup web/www", "spec.schedule"],
    ),
    "invalid-backup-two-fields": (
        BACKUP.replace("path: /var/www", "path: var").replace("www-restic", "Bad_Secret"),
        [
            "Backup web/www",
            "spec.backupSource.path",
            "spec.destination.repositorySecretName",
        ],
    ),
    "workload-without-volume": (
        BACKUP.replace("volumeName: data", "volumeName: other") + "---\n" + USER_DEPLOYMENT,
        ["Backup web/www", "Deployment/web/www", "spec.backupSource.volumeName"],
    ),
}


@pytest.mark.parametrize("command", ["diff", "inject"])
@pytest.mark.parametrize(("text", "expected"), BROKEN.values(), ids=BROKEN.keys())
def test_broken_input_exits_2_naming_file_and_object(tmp_path, command, text, expected):
    marker = tmp_path / "PWNED"
    path = write(tmp_path, "bad.yaml", text.replace("{marker}", str(marker)))
    proc = restik(command, "-f", str(path))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("restik: error: ")
    assert str(path) in proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr, proc.stderr
    assert "hunter" not in proc.stderr, "a value of the manifest was printed"
    assert not marker.exists(), "a YAML tag executed a command"


def test_broken_input_through_main(capsys, monkeypatch, tmp_path):
    marker = tmp_path / "PWNED"
    path = write(tmp_path, "bad.yaml", f'!!python/object/apply:os.system ["touch {marker}"]\n')
    code, out, err = run_main(capsys, monkeypatch, "inject", "-f", str(path))
    assert (code, out) == (2, "")
    assert str(path) in err
    assert not marker.exists()


def test_nonexistent_path_exits_2(tmp_path):
    missing = tmp_path / "nope.yaml"
    for command in ("diff", "inject"):
        proc = restik(command, "-f", str(missing))
        assert proc.returncode == 2
        assert f"{missing}: no such file or directory" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_one_bad_file_in_a_directory_names_that_file(tmp_path):
    (tmp_path / "good.yaml").write_text(BACKUP)
    (tmp_path / "worse.yaml").write_text("- a\n")
    proc = restik("diff", "-f", str(tmp_path))
    assert proc.returncode == 2
    assert str(tmp_path / "worse.yaml") in proc.stderr


def test_stdin_broken_input_is_named(tmp_path):
    proc = restik("inject", "-f", "-", stdin="a: [b\n")
    assert proc.returncode == 2
    assert "<stdin>" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- KRM function mode

DEPLOYMENT_ITEM = textwrap.indent(USER_DEPLOYMENT.replace("# The web server.\n", ""), "  ")


def resource_list(items: str, image: str | None = None, version="config.kubernetes.io/v1"):
    text = f"apiVersion: {version}\nkind: ResourceList\n"
    if image is not None:
        text += (
            "functionConfig:\n  apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cfg}\n"
            f"  data:\n    image: {image}\n"
        )
    return text + "items:\n" + items


def items(*docs: str) -> str:
    return "".join("-" + textwrap.indent(d, "  ")[1:] for d in docs)


@pytest.mark.parametrize("version", ["config.kubernetes.io/v1", "config.kubernetes.io/v1beta1"])
def test_krm_function_injects_items(version):
    rl = resource_list(items(BACKUP, CONFIGMAP, USER_DEPLOYMENT), version=version)
    proc = restik("inject", stdin=rl)
    assert proc.returncode == 0, proc.stderr
    out = YAML(typ="safe", pure=True).load(proc.stdout)
    assert out["kind"] == "ResourceList" and out["apiVersion"] == version
    assert [i["kind"] for i in out["items"]] == ["Backup", "ConfigMap", "Deployment"]
    spec = out["items"][2]["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["nginx", "restik"]
    assert out["items"][:2] == load_all(BACKUP + "---\n" + CONFIGMAP)
    assert out["results"] == [
        {
            "message": "inject restik sidecar (www)",
            "severity": "info",
            "resourceRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "www",
                "namespace": "web",
            },
        }
    ]
    # the same with -f -
    assert restik("inject", "-f", "-", stdin=rl).stdout == proc.stdout


def test_krm_function_config_sets_the_image():
    rl = resource_list(items(BACKUP, USER_DEPLOYMENT), image="reg.example/restik:1.2")
    proc = restik("inject", stdin=rl)
    assert proc.returncode == 0, proc.stderr
    out = YAML(typ="safe", pure=True).load(proc.stdout)
    containers = out["items"][1]["spec"]["template"]["spec"]["containers"]
    assert containers[1]["image"] == "reg.example/restik:1.2"


def test_krm_function_invalid_backup_is_an_error_result():
    bad = BACKUP.replace('"@hourly"', '"61 * * * *"')
    proc = restik("inject", stdin=resource_list(items(bad, USER_DEPLOYMENT)))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    out = YAML(typ="safe", pure=True).load(proc.stdout)
    errors = [r for r in out["results"] if r["severity"] == "error"]
    assert len(errors) == 1
    assert "Backup web/www" in errors[0]["message"]
    assert "spec.schedule" in errors[0]["message"]
    # items are left as they came
    assert out["items"] == load_all(bad + "---\n" + USER_DEPLOYMENT)


def test_krm_function_through_main(capsys, monkeypatch):
    rl = resource_list(items(BACKUP, USER_DEPLOYMENT), image="reg.example/restik:3")
    code, out, err = run_main(capsys, monkeypatch, "inject", "-f", "-", stdin=rl)
    assert code == 0, err
    data = YAML(typ="safe", pure=True).load(out)
    assert data["items"][1]["spec"]["template"]["spec"]["containers"][1]["image"] == (
        "reg.example/restik:3"
    )


def test_krm_function_broken_input_exits_2():
    proc = restik("inject", stdin=resource_list("- !!python/object/apply:os.system [id]\n"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_version():
    proc = restik("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("restik ")
