"""Helpers for the alert and dashboard tests: the built prometheus overlay and PromQL names."""

from __future__ import annotations

import json
import re

from tests.factories.kustomize import _built

# PromQL words that are not metric names.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip
_NAME_REGEX = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_STRINGS = re.compile(r'"[^"]*"')
_IDENT = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")  # not the unit of 5m
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*\w+\s*\)")  # Grafana: (query, label)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (by name or by a __name__ matcher)."""
    names: set[str] = set()
    expr = _LABEL_VALUES.sub(r"(\1)", expr)
    for alternatives in _NAME_REGEX.findall(expr):
        names |= set(alternatives.split("|"))
    text = _MATCHERS.sub(" ", expr)
    text = _GROUPING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _STRINGS.sub(" ", text)
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue  # a function or an operator
        names.add(word)
    return names


def prometheus_objects() -> tuple[dict, ...]:
    return _built("prometheus")


def rule_groups() -> list[dict]:
    rules = [o for o in prometheus_objects() if o["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    return rules[0]["spec"]["groups"]


def dashboard() -> dict:
    maps = [
        o
        for o in prometheus_objects()
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "restik-dashboard"
    ]
    assert len(maps) == 1
    (text,) = maps[0]["data"].values()
    return json.loads(text)


def dashboard_queries(dash: dict) -> list[str]:
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs
