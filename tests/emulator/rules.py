"""Server-side rules the kinds (kinds.py) share: names, labels, pod specs, selectors, CRDs."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from .errors import bad_request

Cause = tuple[str, str, str]  # (reason, field, message)

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _invalid(field: str, value: Any, msg: str) -> Cause:
    return ("FieldValueInvalid", field, f"Invalid value: {_quote(value)}: {msg}")


def _required(field: str, msg: str = "") -> Cause:
    return ("FieldValueRequired", field, "Required value" + (f": {msg}" if msg else ""))


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(value.items())) + "]"
    return str(value)


# -- decoding checks (400, like a Go unmarshal error) ---------------------------------------


def check_types(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise bad_request(
            "json: cannot unmarshal into Go struct field .metadata of type v1.ObjectMeta"
        )
    for key in ("labels", "annotations"):
        value = (meta or {}).get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad_request(
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{key} "
                "of type map[string]string"
            )


# -- labels ------------------------------------------------------------------------------------


def _validate_labels(labels: dict[str, str], path: str) -> list[Cause]:
    causes = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (
            not name
            or len(name) > 63
            or not LABEL_NAME.match(name)
            or (prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)))
        ):
            causes.append(_invalid(path, key, "name part must consist of alphanumeric characters"))
        if len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(
                _invalid(
                    f"{path}",
                    value,
                    "a valid label must be an empty string or consist of alphanumeric "
                    "characters, '-', '_' or '.', and must start and end with an alphanumeric "
                    "character",
                )
            )
    return causes


# -- pod specs --------------------------------------------------------------------------------


def default_pod_spec(spec: dict[str, Any]) -> None:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            image = c.get("image") or ""
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            c.setdefault("resources", {})
            for p in c.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("secret", "configMap"):
            if isinstance(v.get(src), dict):
                v[src].setdefault("defaultMode", 420)
        if "emptyDir" not in v and len(v) == 1:  # only a name: an emptyDir
            v["emptyDir"] = {}


def validate_pod_spec(
    spec: Any, path: str, claim_names: frozenset[str] = frozenset()
) -> list[Cause]:
    """``claim_names``: a StatefulSet's volumeClaimTemplates, which containers may mount too."""
    if not isinstance(spec, dict):
        return [_required(path)]
    causes: list[Cause] = []
    volumes = spec.get("volumes") or []
    names: set[str] = set()
    for i, v in enumerate(volumes):
        name = v.get("name") if isinstance(v, dict) else None
        if not name:
            causes.append(_required(f"{path}.volumes[{i}].name"))
        elif name in names:
            causes.append(("FieldValueDuplicate", f"{path}.volumes[{i}].name",
                           f'Duplicate value: "{name}"'))  # fmt: skip
        elif len(name) > 63 or not DNS_LABEL.match(name):
            causes.append(_invalid(f"{path}.volumes[{i}].name", name, "must be a DNS label"))
        names.add(name)
    containers = spec.get("containers")
    if not containers:
        causes.append(_required(f"{path}.containers"))
    seen: set[str] = set()
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for i, c in enumerate(spec.get(key) or []):
            cpath = f"{path}.{key}[{i}]"
            if not isinstance(c, dict):
                causes.append(_required(cpath))
                continue
            name = c.get("name")
            if not name:
                causes.append(_required(f"{cpath}.name"))
            elif name in seen:
                causes.append(
                    ("FieldValueDuplicate", f"{cpath}.name", f'Duplicate value: "{name}"')
                )
            elif len(name) > 63 or not DNS_LABEL.match(name):
                causes.append(_invalid(f"{cpath}.name", name, "must be a DNS label"))
            seen.add(name)
            if not c.get("image") and key != "ephemeralContainers":
                causes.append(_required(f"{cpath}.image"))
            paths = set()
            for j, m in enumerate(c.get("volumeMounts") or []):
                mpath = f"{cpath}.volumeMounts[{j}]"
                if not m.get("name"):
                    causes.append(_required(f"{mpath}.name"))
                elif m["name"] not in names and m["name"] not in claim_names:
                    causes.append(("FieldValueNotFound", f"{mpath}.name",
                                   f'Not found: "{m["name"]}"'))  # fmt: skip
                if not m.get("mountPath"):
                    causes.append(_required(f"{mpath}.mountPath"))
                elif m["mountPath"] in paths:
                    causes.append(_invalid(f"{mpath}.mountPath", m["mountPath"], "must be unique"))
                paths.add(m.get("mountPath"))
            for j, e in enumerate(c.get("env") or []):
                if not isinstance(e, dict) or not e.get("name"):
                    causes.append(_required(f"{cpath}.env[{j}].name"))
    return causes


# -- selectors and CRDs ----------------------------------------------------------------------


def _selector_matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _validate_crd(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    causes: list[Cause] = []
    if not spec.get("group"):
        causes.append(_required("spec.group"))
    if not names.get("plural"):
        causes.append(_required("spec.names.plural"))
    if not names.get("kind"):
        causes.append(_required("spec.names.kind"))
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        causes.append(("FieldValueNotSupported", "spec.scope",
                       f'Unsupported value: "{spec.get("scope", "")}": supported values: '
                       '"Cluster", "Namespaced"'))  # fmt: skip
    versions = spec.get("versions") or []
    if not versions:
        causes.append(_required("spec.versions"))
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(_invalid("spec.versions", "", "must have exactly one version marked as "
                               "storage version"))  # fmt: skip
    expected = f"{names.get('plural')}.{spec.get('group')}"
    name = (obj.get("metadata") or {}).get("name")
    if not causes and name != expected:
        causes.append(_invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    return causes


def encode_string_data(obj: dict[str, Any]) -> None:
    """Secrets: stringData is write-only, merged into data (base64) and never stored."""
    string_data = obj.pop("stringData", None)
    data = obj.get("data")
    if data is not None and not isinstance(data, dict):
        raise bad_request("json: cannot unmarshal into Go struct field Secret.data")
    for key, value in (data or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise bad_request(
                f"illegal base64 data at input byte 0 (in Secret.data[{key}])"
            ) from None
    if string_data:
        data = dict(data or {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def crd_defaults(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind"):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec.setdefault("conversion", {"strategy": "None"})


def crd_status(obj: dict[str, Any], now: str = "") -> dict[str, Any]:
    spec = obj.get("spec") or {}
    storage = [v.get("name") for v in spec.get("versions") or [] if v.get("storage")]
    old = obj.get("status") or {}
    stored = list(old.get("storedVersions") or [])
    for v in storage:
        if v not in stored:
            stored.append(v)
    cond = {"status": "True", "lastTransitionTime": now or obj["metadata"]["creationTimestamp"]}
    return {
        "conditions": [
            {**cond, "type": "NamesAccepted", "reason": "NoConflicts",
             "message": "no conflicts found"},
            {**cond, "type": "Established", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
        "acceptedNames": dict(spec.get("names") or {}),
        "storedVersions": stored,
    }  # fmt: skip
