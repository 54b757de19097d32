"""Custom resources against their CRD's structural schema: pruning, then validation.

The real API server drops fields a structural schema does not declare (unless
x-kubernetes-preserve-unknown-fields says to keep them) and answers 422 Invalid with
one cause per violation. Formats are not checked, as the server only checks a few.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jsonschema

Cause = tuple[str, str, str]


def prune(value: Any, schema: dict[str, Any] | None, root: bool = True) -> Any:
    """Drop undeclared fields in place; returns ``value`` for convenience."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key in list(value):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                prune(value[key], props[key], root=False)
            elif isinstance(extra, dict):
                prune(value[key], extra, root=False)
            elif not (extra is True or keep_unknown):
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            prune(item, schema["items"], root=False)
    return value


def _plain_schema(schema: Any) -> Any:
    """The schema without Kubernetes extensions, as JSON Schema understands it."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key.startswith("x-kubernetes-") or key == "format":
                continue
            out[key] = _plain_schema(value)
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
        return out
    if isinstance(schema, list):
        return [_plain_schema(v) for v in schema]
    return schema


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> jsonschema.Draft7Validator:
    import json

    return jsonschema.Draft7Validator(_plain_schema(json.loads(schema_json)))


def validate(obj: dict[str, Any], schema: dict[str, Any] | None) -> list[Cause]:
    if not isinstance(schema, dict):
        return []
    import json

    body = {k: v for k, v in obj.items() if k != "metadata"}
    top = dict(schema)
    top.setdefault("properties", {})
    top = {**top, "properties": {k: v for k, v in top["properties"].items() if k != "metadata"}}
    validator = _validator(json.dumps(top, sort_keys=True))
    causes = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            field = f"{path}.{missing}" if path else missing
            causes.append(("FieldValueRequired", field, "Required value"))
        elif error.validator == "enum":
            causes.append(("FieldValueNotSupported", path, f"Unsupported value: {error.message}"))
        elif error.validator == "type":
            causes.append(("FieldValueTypeInvalid", path, f"Invalid value: {error.message}"))
        else:
            causes.append(("FieldValueInvalid", path, f"Invalid value: {error.message}"))
    return causes
