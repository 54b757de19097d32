"""``spec.resources`` of the Backup: the sidecar's requests and limits, defaults per field
and bounds."""

from __future__ import annotations

import re

from reconciler.api.fields import QUANTITY, Collector, parse_quantity, type_name

# The sidecar's resources unless spec.resources says otherwise (per field, see
# parse_resources). Requests: the idle sidecar uses ~35 MiB and next to no CPU, so
# scheduling reserves little on every backed-up pod. Limits: a ResourceQuota on
# limits.cpu/limits.memory rejects a container without them, so both are set. One CPU
# lets restic hash and compress at a useful speed without starving the application;
# 512 MiB holds restic's index for repositories of a few hundred GB (restic's memory
# grows with the index, larger repositories need spec.resources.limits.memory).
DEFAULT_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}

# Bounds of spec.resources (README "Resources"): a sidecar needs no more to back up, and a
# Backup must not be a way to claim a node's capacity or special devices.
RESOURCE_BOUNDS = {
    "cpu": ("1m", "8"),
    "memory": ("32Mi", "64Gi"),
    "ephemeral-storage": ("1Mi", "1Ti"),
}


def parse_resources(c: Collector, value: object) -> dict:
    """The sidecar's effective resources: DEFAULT_RESOURCES with each field the user gives
    replacing its default. A default never contradicts a user value: a request above the
    default limit raises that limit to the request, a limit below the default request
    lowers that request to the limit (as Kubernetes defaults a missing request to the
    limit). A user's own request above the user's own limit is an error."""
    path = "spec.resources"
    resources = c.mapping(value, path, {"limits", "requests"})
    given: dict = {"limits": {}, "requests": {}}
    for section in ("limits", "requests"):
        entries = c.mapping(resources.get(section), f"{path}.{section}")
        for rname, qty in entries.items():
            where = f"{path}.{section}.{rname}"
            if not isinstance(rname, str) or not re.match(r"^[A-Za-z0-9./_-]{1,253}$", rname):
                c.add(where, "is not a valid resource name")
                continue
            if rname not in RESOURCE_BOUNDS:
                c.add(where, f"only {', '.join(RESOURCE_BOUNDS)} may be set for the sidecar")
                continue
            if isinstance(qty, bool) or not isinstance(qty, str | int | float):
                c.add(where, f"must be a quantity, got {type_name(qty)}")
                continue
            if not QUANTITY.match(str(qty)):
                c.add(where, f"{qty!r} is not a valid quantity")
                continue
            if parse_quantity(str(qty)) < 0:
                c.add(where, f"{qty!r} must not be negative")
                continue
            low, high = RESOURCE_BOUNDS[rname]
            if not parse_quantity(low) <= parse_quantity(str(qty)) <= parse_quantity(high):
                c.add(where, f"{qty!r} is out of bounds (from {low} to {high})")
                continue
            given[section][rname] = qty if isinstance(qty, str) else str(qty)
    out = {section: {**DEFAULT_RESOURCES[section], **given[section]} for section in given}
    for rname in sorted(set(out["requests"]) & set(out["limits"])):
        request, limit = out["requests"][rname], out["limits"][rname]
        if parse_quantity(request) <= parse_quantity(limit):
            continue
        if rname in given["requests"] and rname in given["limits"]:
            c.add(
                f"{path}.requests.{rname}",
                f"{request} must not exceed limits.{rname} ({limit})",
            )
        elif rname in given["requests"]:
            out["limits"][rname] = request
        else:
            out["requests"][rname] = limit
    return out
