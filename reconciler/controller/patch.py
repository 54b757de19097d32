"""JSON merge patches (RFC 7386) computed from a before and an after object."""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.api.fields import plain


def merge_patch(before: Mapping, after: Mapping) -> dict:
    """The smallest merge patch turning ``before`` into ``after`` (lists are replaced whole)."""
    patch: dict = {}
    for key, value in after.items():
        if key not in before:
            patch[key] = plain(value)
        elif isinstance(value, Mapping) and isinstance(before[key], Mapping):
            sub = merge_patch(before[key], value)
            if sub:
                patch[key] = sub
        elif plain(before[key]) != plain(value):
            patch[key] = plain(value)
    for key in before:
        if key not in after:
            patch[key] = None
    return patch
