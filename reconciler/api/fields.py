"""Checking decoded API objects field by field: every error carries the field's path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
NAME_LIMITS = {DNS_LABEL: 63, DNS_SUBDOMAIN: 253}
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")
MAX_STRING = 4096
MAX_LIST = 256


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidObject(ValueError):
    """A restik object that failed validation; ``errors`` names every bad field."""

    kind = "object"

    def __init__(self, namespace: str, name: str, errors: list[FieldError]):
        self.namespace = namespace
        self.name = name
        self.errors = tuple(errors)
        super().__init__(f"{self.kind} {namespace}/{name}: " + "; ".join(map(str, errors)))


class Collector:
    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def mapping(self, value: object, path: str, allowed: set[str] | None = None) -> Mapping:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(path, f"must be an object, got {type_name(value)}")
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.add(f"{path}.{key}", "unknown field")
        return value

    def string(
        self, value: object, path: str, *, required: bool = False, pattern=None, what: str = ""
    ) -> str | None:
        if value is None:
            if required:
                self.add(path, "required")
            return None
        if not isinstance(value, str):
            self.add(path, f"must be a string, got {type_name(value)}")
            return None
        if required and not value:
            self.add(path, "must not be empty")
            return None
        if len(value) > MAX_STRING:
            self.add(path, f"too long ({len(value)} characters, at most {MAX_STRING})")
            return None
        if "\x00" in value or "\n" in value or "\r" in value:
            self.add(path, "must not contain NUL or line breaks")
            return None
        if pattern is not None and not pattern.match(value):
            self.add(path, f"{value!r} is not a valid {what}")
            return None
        limit = NAME_LIMITS.get(pattern)
        if limit is not None and len(value) > limit:
            self.add(path, f"{what} too long ({len(value)} characters, at most {limit})")
            return None
        return value

    def strings(self, value: object, path: str, *, forbid: str = "") -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.add(path, f"must be a list of strings, got {type_name(value)}")
            return ()
        if len(value) > MAX_LIST:
            self.add(path, f"too many entries ({len(value)}, at most {MAX_LIST})")
            return ()
        out = []
        for i, item in enumerate(value):
            text = self.string(item, f"{path}[{i}]", required=True)
            if text is None:
                continue
            if forbid and any(ch in text for ch in forbid):
                self.add(f"{path}[{i}]", f"must not contain any of {forbid!r}")
                continue
            out.append(text)
        return tuple(out)

    def count(self, value: object, path: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(path, f"must be an integer, got {type_name(value)}")
            return None
        if value < 0 or value > 1_000_000:
            self.add(path, "must be between 0 and 1000000")
            return None
        return value

    def boolean(self, value: object, path: str) -> bool:
        if value is None:
            return False
        if not isinstance(value, bool):
            self.add(path, f"must be true or false, got {type_name(value)}")
            return False
        return value

    def abs_path(self, value: object, path: str, *, required: bool = True) -> str | None:
        text = self.string(value, path, required=required)
        if text is None:
            return None
        if not text.startswith("/"):
            self.add(path, f"{text!r} must be an absolute path")
            return None
        if ".." in text.split("/"):
            self.add(path, f"{text!r} must not contain '..'")
            return None
        return text


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def parse_quantity(text: str) -> Decimal:
    """A Kubernetes quantity ("500m", "1.5Gi", "2e3") as a number, for comparisons."""
    match = re.match(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))(.*)$", text)
    if match is None:
        raise ValueError(f"{text!r} is not a quantity")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if re.match(r"^[eE][+-]?\d+$", suffix):
        return number * Decimal(10) ** int(suffix[1:])
    if suffix not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a quantity")
    return number * _SUFFIXES[suffix]


def plain(value: object) -> object:
    """A deep copy as plain dicts and lists (drops ruamel's comment-carrying types)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
