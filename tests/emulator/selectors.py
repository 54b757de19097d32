"""labelSelector and fieldSelector parsing and matching, as the API server does it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Matcher = Callable[[dict[str, Any]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=)\s*({_VALUE})\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, []
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    terms.append("".join(cur))
    return [t for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Matcher | None:
    if not selector or not selector.strip():
        return None
    reqs: list[Matcher] = []
    for term in _split_terms(selector):
        if m := _SET_RE.match(term):
            key, op = m.group(1), m.group(3)
            values = {v.strip() for v in m.group(4).split(",") if v.strip()}
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif m := _EQ_RE.match(term):
            key, op, value = m.group(1), m.group(3), m.group(4)
            if op == "!=":
                reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                reqs.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif m := _EXISTS_RE.match(term):
            neg, key = m.group(1), m.group(2)
            if neg:
                reqs.append(lambda labels, k=key: k not in labels)
            else:
                reqs.append(lambda labels, k=key: k in labels)
        else:
            raise bad_request(
                f"unable to parse requirement: found '{term.strip()}', expected a valid selector"
            )

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    if node is None:
        return ""
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, dict):  # e.g. event "source" is {component: ...}
        return str(node.get("component", ""))
    return str(node)


def parse_field_selector(selector: str | None, allowed: tuple[str, ...]) -> Matcher | None:
    if not selector or not selector.strip():
        return None
    reqs: list[tuple[str, bool, str]] = []
    for term in selector.split(","):
        if not term.strip():
            continue
        for op in ("!=", "==", "="):
            if op in term:
                field, value = term.split(op, 1)
                field = field.strip()
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        if field not in ("metadata.name", "metadata.namespace", *allowed):
            raise bad_request(f"field label not supported: {field}")
        reqs.append((field, op != "!=", value.strip()))

    def match(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) == eq for f, eq, v in reqs)

    return match
