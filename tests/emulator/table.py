"""The Table format (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) that kubectl get
asks for: a CRD's additionalPrinterColumns (simple JSONPath), built-in kinds' usual columns,
dates rendered as ages by the server, as the real table convertors do."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)
_MISSING = object()


def wants_table(accept: str | None) -> str | None:
    """The meta.k8s.io version of the Table the client accepts first (None: plain JSON)."""
    for part in (accept or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        params = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        if fields[0] in ("application/json", "*/*") and params.get("as") == "Table":
            if params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
                return params["v"]
        elif fields[0] in ("application/json", "*/*", "") and "as" not in params:
            return None
    return None


# -- JSONPath (the subset printer columns use) --------------------------------------------------

_TOKEN = re.compile(
    r"\.(?P<field>[A-Za-z0-9_\-/]+)"
    r"|\[(?P<index>-?\d+|\*)\]"
    r"|\[\?\(@\.(?P<key>[A-Za-z0-9_.\-]+)\s*(?P<op>==|!=)\s*(?P<quote>[\"'])(?P<value>.*?)(?P=quote)\)\]"
    r"|\.?\[\'(?P<quoted>[^']+)\'\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value a simple JSONPath (.a.b, [0], [*], [?(@.k=="v")], ['a.b']) selects."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    current = [obj]
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match:
            return []
        pos = match.end()
        nxt: list[Any] = []
        for value in current:
            if match.group("field") is not None or match.group("quoted") is not None:
                key = match.group("field") or match.group("quoted")
                if isinstance(value, dict) and key in value:
                    nxt.append(value[key])
            elif match.group("index") is not None:
                if not isinstance(value, list):
                    continue
                if match.group("index") == "*":
                    nxt.extend(value)
                else:
                    i = int(match.group("index"))
                    if -len(value) <= i < len(value):
                        nxt.append(value[i])
            else:
                if not isinstance(value, list):
                    continue
                for item in value:
                    found = _dig(item, match.group("key"))
                    equal = found is not _MISSING and _text(found) == match.group("value")
                    if equal == (match.group("op") == "=="):
                        nxt.append(item)
        current = nxt
    return current


def _dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return (
        json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
    )


# -- cells --------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: 45s, 3m20s, 15m, 5h30m, 2d4h, 400d, 3y20d."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any, now: float) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        when = datetime.strptime(timestamp.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return "<invalid>"
    return human_duration(now - when.astimezone(UTC).timestamp())


def _cell(kind: str, values: list[Any], now: float) -> Any:
    """One additionalPrinterColumn cell, as the CRD table convertor makes it."""
    if not values or values[0] is None:
        return None
    value = values[0]
    if kind == "string":
        return _text(value)
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, str):
        return age(value, now)
    return None


# -- columns of built-in kinds --------------------------------------------------------------------


def _ready_pods(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: dict[str, Any]) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for s in status.get("containerStatuses") or []:
        waiting = (s.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return waiting["reason"]
    return status.get("phase") or "Pending"


def _s(obj: dict[str, Any], *path: str, default: Any = 0) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return default if obj is None else obj


# (name, type, cell function[, priority: 1 = only with -o wide])
BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[Any, ...]]] = {
    ("", "pods"): [
        ("Ready", "string", _ready_pods),
        ("Status", "string", _pod_status),
        ("Restarts", "string", lambda o: str(sum(
            s.get("restartCount", 0) for s in _s(o, "status", "containerStatuses", default=[])))),
        ("IP", "string", lambda o: _s(o, "status", "podIP", default="<none>"), 1),
        ("Node", "string", lambda o: _s(o, "spec", "nodeName", default="<none>"), 1),
    ],
    ("apps", "deployments"): [
        ("Ready", "string", lambda o: f"{_s(o, 'status', 'readyReplicas')}/"
                                      f"{_s(o, 'spec', 'replicas', default=1)}"),
        ("Up-to-date", "integer", lambda o: _s(o, "status", "updatedReplicas")),
        ("Available", "integer", lambda o: _s(o, "status", "availableReplicas")),
    ],
    ("apps", "replicasets"): [
        ("Desired", "integer", lambda o: _s(o, "spec", "replicas", default=1)),
        ("Current", "integer", lambda o: _s(o, "status", "replicas")),
        ("Ready", "integer", lambda o: _s(o, "status", "readyReplicas")),
    ],
    ("", "replicationcontrollers"): [
        ("Desired", "integer", lambda o: _s(o, "spec", "replicas", default=1)),
        ("Current", "integer", lambda o: _s(o, "status", "replicas")),
        ("Ready", "integer", lambda o: _s(o, "status", "readyReplicas")),
    ],
    ("apps", "statefulsets"): [
        ("Ready", "string", lambda o: f"{_s(o, 'status', 'readyReplicas')}/"
                                      f"{_s(o, 'spec', 'replicas', default=1)}"),
    ],
    ("apps", "daemonsets"): [
        ("Desired", "integer", lambda o: _s(o, "status", "desiredNumberScheduled")),
        ("Current", "integer", lambda o: _s(o, "status", "currentNumberScheduled")),
        ("Ready", "integer", lambda o: _s(o, "status", "numberReady")),
        ("Up-to-date", "integer", lambda o: _s(o, "status", "updatedNumberScheduled")),
        ("Available", "integer", lambda o: _s(o, "status", "numberAvailable")),
    ],
    ("policy", "poddisruptionbudgets"): [
        ("Min Available", "string", lambda o: str(_s(o, "spec", "minAvailable", default="N/A"))),
        ("Max Unavailable", "string",
         lambda o: str(_s(o, "spec", "maxUnavailable", default="N/A"))),
        ("Allowed Disruptions", "integer", lambda o: _s(o, "status", "disruptionsAllowed")),
    ],
}  # fmt: skip


def _event_last_seen(event: dict[str, Any], now: float) -> str:
    when = (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event["metadata"].get("creationTimestamp")
    )
    return age(when, now) if when else "<unknown>"


def _event_object(event: dict[str, Any]) -> str:
    ref = event.get("involvedObject") or {}
    return f"{str(ref.get('kind', '')).lower()}/{ref.get('name', '')}"


# Events print without a leading Name (it is a wide column), as the API server's printer has it.
EVENT_COLUMNS: list[tuple[Any, ...]] = [
    ("Last Seen", "string", None),  # filled in with the time, see to_table
    ("Type", "string", lambda o: o.get("type", "")),
    ("Reason", "string", lambda o: o.get("reason", "")),
    ("Object", "string", _event_object),
    ("Message", "string", lambda o: o.get("message", "")),
    ("Count", "integer", lambda o: o.get("count", 1), 1),
    ("Name", "string", lambda o: o["metadata"]["name"], 1),
]


def _builtin_columns(rt: ResourceType) -> list[tuple[Any, ...]]:
    """The kind's columns with Age after the default ones and before the -o wide ones."""
    extra = BUILTIN_COLUMNS.get(rt.key, [])
    wide = [c for c in extra if len(c) > 3 and c[3]]
    return [c for c in extra if c not in wide] + [("Age", "string", None)] + wide


def _column(name: str, kind: str, description: str = "", fmt: str = "", priority: int = 0):
    return {"name": name, "type": kind, "format": fmt, "description": description,
            "priority": priority}  # fmt: skip


def to_table(
    rt: ResourceType,
    objects: list[dict[str, Any]],
    version: str,
    resource_version: str,
    include: str,
    now: float,
    cont: str | None = None,
) -> dict[str, Any]:
    """A meta.k8s.io Table of the objects (include: None, Metadata or Object)."""
    if rt.key == ("", "events"):
        columns = [_column(c[0], c[1], priority=c[3] if len(c) > 3 else 0) for c in EVENT_COLUMNS]
        rows = []
        for obj in objects:
            cells = [_event_last_seen(obj, now)] + [c[2](obj) for c in EVENT_COLUMNS[1:]]
            rows.append(_row(cells, obj, include, version))
        return _table(rows, columns, version, resource_version, cont)
    columns = [_column("Name", "string", NAME_DESCRIPTION, "name")]
    if rt.builtin:
        extra = _builtin_columns(rt)
        columns += [_column(c[0], c[1], AGE_DESCRIPTION if c[0] == "Age" else "",
                            priority=c[3] if len(c) > 3 else 0) for c in extra]  # fmt: skip
    else:
        printer = list(rt.printer_columns) or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
        columns += [
            _column(c.get("name", ""), c.get("type", "string"), c.get("description", ""),
                    c.get("format", ""), c.get("priority", 0))
            for c in printer
        ]  # fmt: skip
    rows = []
    for obj in objects:
        cells: list[Any] = [obj["metadata"]["name"]]
        if rt.builtin:
            cells += [c[2](obj) if c[2] else age(obj["metadata"].get("creationTimestamp"), now)
                      for c in extra]  # fmt: skip
        else:
            cells += [_cell(c.get("type", "string"), jsonpath(obj, c.get("jsonPath", "")), now)
                      for c in printer]  # fmt: skip
        rows.append(_row(cells, obj, include, version))
    return _table(rows, columns, version, resource_version, cont)


def _row(cells: list[Any], obj: dict[str, Any], include: str, version: str) -> dict[str, Any]:
    row: dict[str, Any] = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                         "metadata": obj["metadata"]}  # fmt: skip
    return row


def _table(rows, columns, version: str, resource_version: str, cont: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": meta,
            "columnDefinitions": columns, "rows": rows}  # fmt: skip
