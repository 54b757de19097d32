"""Validating admission on pod creation: Pod Security Admission and ResourceQuota.

Pod Security follows the `pod-security.kubernetes.io/enforce` label of the namespace (baseline
or restricted, the checks of the Pod Security Standards, "latest" version) and refuses with
the real message shape: 403, `pods "x" is forbidden: violates PodSecurity "restricted:latest":
...`. ResourceQuota refuses pods that do not specify a resource the quota constrains
(`failed quota: q: must specify limits.cpu for: c`) or that exceed its `pods` count or its
cpu/memory sums (`exceeded quota: ...`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .errors import ApiError
from .resources import ResourceType
from .store import Store

ENFORCE = "pod-security.kubernetes.io/enforce"
ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
RESTRICTED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret", "image")  # fmt: skip
VOLUME_SOURCES = (
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
    "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "portworxVolume", "photonPersistentDisk",
    "scaleIO", "storageos", *RESTRICTED_VOLUMES,
)  # fmt: skip


def forbidden(name: str, message: str) -> ApiError:
    return ApiError(403, "Forbidden", f'pods "{name}" is forbidden: {message}',
                    {"name": name, "kind": "pods"})  # fmt: skip


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
        if isinstance(c, dict)
    ]


def _names(kind: str, names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{kind}s {quoted}" if len(names) > 1 else f"{kind} {quoted}"


# -- Pod Security Standards --------------------------------------------------------------------


def _baseline(spec: dict[str, Any]) -> list[str]:
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    out: list[str] = []
    caps = {}
    for c in containers:
        added = [a for a in ((c.get("securityContext") or {}).get("capabilities") or {}).get(
            "add") or [] if a not in BASELINE_CAPABILITIES]  # fmt: skip
        if added:
            caps[c["name"]] = added
    if caps:
        out.append("non-default capabilities (" + "; ".join(
            f'container "{n}" must not include {", ".join(chr(34) + a + chr(34) for a in added)} '
            "in securityContext.capabilities.add" for n, added in caps.items()) + ")")  # fmt: skip
    hosts = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if hosts:
        out.append(f"host namespaces ({', '.join(hosts)})")
    host_paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if host_paths:
        out.append(f"hostPath volumes ({_names('volume', host_paths)})")
    ports = []
    for c in containers:
        used = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            word = "hostPorts" if len(used) > 1 else "hostPort"
            ports.append(f'container "{c["name"]}" uses {word} {", ".join(used)}')
    if ports:
        out.append(f"hostPort ({'; '.join(ports)})")
    privileged = [c["name"] for c in containers
                  if (c.get("securityContext") or {}).get("privileged")]  # fmt: skip
    if privileged:
        out.append(f"privileged ({_names('container', privileged)} must not set "
                   "securityContext.privileged=true)")  # fmt: skip
    proc = [
        c["name"]
        for c in containers
        if (c.get("securityContext") or {}).get("procMount") not in (None, "Default")
    ]
    if proc:
        out.append(f"procMount ({_names('container', proc)} must not set "
                   "securityContext.procMount)")  # fmt: skip
    unconfined = []
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        unconfined.append("pod")
    unconfined += [
        f'container "{c["name"]}"'
        for c in containers
        if ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type")
        == "Unconfined"
    ]
    if unconfined:
        out.append(f"seccompProfile ({', '.join(unconfined)} must not set "
                   'securityContext.seccompProfile.type to "Unconfined")')  # fmt: skip
    return out


def _restricted(spec: dict[str, Any]) -> list[str]:
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    out: list[str] = []

    def sc(c: dict[str, Any]) -> dict[str, Any]:
        return c.get("securityContext") or {}

    escalation = [c["name"] for c in containers if sc(c).get("allowPrivilegeEscalation")
                  is not False]  # fmt: skip
    if escalation:
        out.append(f"allowPrivilegeEscalation != false ({_names('container', escalation)} must "
                   "set securityContext.allowPrivilegeEscalation=false)")  # fmt: skip
    no_drop, added = [], []
    for c in containers:
        caps = sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            no_drop.append(c["name"])
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            added.append(f'container "{c["name"]}" must not include '
                         f'{", ".join(chr(34) + a + chr(34) for a in extra)} in '
                         "securityContext.capabilities.add")  # fmt: skip
    if no_drop or added:
        parts = ([f"{_names('container', no_drop)} must set securityContext.capabilities."
                  'drop=["ALL"]'] if no_drop else []) + added  # fmt: skip
        out.append(f"unrestricted capabilities ({'; '.join(parts)})")
    bad_volumes = []
    for v in spec.get("volumes") or []:
        kind = next((k for k in VOLUME_SOURCES if k in v), None)
        if kind is not None and kind not in RESTRICTED_VOLUMES:
            bad_volumes.append(f'volume "{v["name"]}" uses restricted volume type "{kind}"')
    if bad_volumes:
        out.append(f"restricted volume types ({'; '.join(bad_volumes)})")
    pod_non_root = pod_sc.get("runAsNonRoot")
    explicit_false = [c["name"] for c in containers if sc(c).get("runAsNonRoot") is False]
    unset = [c["name"] for c in containers if sc(c).get("runAsNonRoot") is None]
    parts = []
    if pod_non_root is False:
        parts.append("pod must not set securityContext.runAsNonRoot=false")
    if explicit_false:
        parts.append(f"{_names('container', explicit_false)} must not set "
                     "securityContext.runAsNonRoot=false")  # fmt: skip
    if pod_non_root is not True and unset:
        parts.append(f"pod or {_names('container', unset)} must set "
                     "securityContext.runAsNonRoot=true")  # fmt: skip
    if parts:
        out.append(f"runAsNonRoot != true ({'; '.join(parts)})")
    root = (["pod"] if pod_sc.get("runAsUser") == 0 else []) + [
        f'container "{c["name"]}"' for c in containers if sc(c).get("runAsUser") == 0
    ]
    if root:
        out.append(f"runAsUser=0 ({', '.join(root)} must not set runAsUser=0)")
    allowed = ("RuntimeDefault", "Localhost")
    pod_type = (pod_sc.get("seccompProfile") or {}).get("type")
    seccomp_parts = []
    if pod_type is not None and pod_type not in allowed:
        seccomp_parts.append(f'pod must not set securityContext.seccompProfile.type to '
                             f'"{pod_type}"')  # fmt: skip
    wrong = [
        c
        for c in containers
        if (sc(c).get("seccompProfile") or {}).get("type") not in (None, *allowed)
    ]
    for c in wrong:
        seccomp_parts.append(
            f'container "{c["name"]}" must not set securityContext.'
            f'seccompProfile.type to "{sc(c)["seccompProfile"]["type"]}"'
        )
    if pod_type not in allowed:
        missing = [c["name"] for c in containers if not (sc(c).get("seccompProfile") or {}).get(
            "type")]  # fmt: skip
        if missing:
            seccomp_parts.append(
                f"pod or {_names('container', missing)} must set securityContext"
                '.seccompProfile.type to "RuntimeDefault" or "Localhost"'
            )
    if seccomp_parts:
        out.append(f"seccompProfile ({'; '.join(seccomp_parts)})")
    return out


def pod_security_violations(level: str, spec: dict[str, Any]) -> list[str]:
    """The Pod Security Standards' findings for a pod spec at a level (baseline/restricted)."""
    if level not in ("baseline", "restricted"):
        return []
    found = _baseline(spec)
    if level == "restricted":
        restricted = _restricted(spec)
        if any(f.startswith("seccompProfile") for f in restricted):  # restricted's check
            found = [f for f in found if not f.startswith("seccompProfile")]  # replaces it
        found += restricted
    return found


# -- ResourceQuota -----------------------------------------------------------------------------

_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "P": 10**15, "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
           "Pi": 2**50, "Ei": 2**60}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def quantity(value: Any) -> Decimal:
    match = _QUANTITY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"invalid quantity {value!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def _pod_resources(spec: dict[str, Any]) -> dict[str, Decimal]:
    """requests.*/limits.* of a pod: the sum of its containers' (the max with init ones)."""
    totals: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for key, value in (res.get(kind) or {}).items():
                name = f"{kind}.{key}"
                totals[name] = totals.get(name, Decimal(0)) + quantity(value)
    for c in spec.get("initContainers") or []:
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for key, value in (res.get(kind) or {}).items():
                name = f"{kind}.{key}"
                totals[name] = max(totals.get(name, Decimal(0)), quantity(value))
    for key in ("cpu", "memory"):  # a limit without a request defaults the request
        if f"requests.{key}" not in totals and f"limits.{key}" in totals:
            missing = [
                c
                for c in spec.get("containers") or []
                if key not in ((c.get("resources") or {}).get("requests") or {})
            ]
            if missing:
                totals[f"requests.{key}"] = totals[f"limits.{key}"]
    return totals


def _fmt(value: Decimal, key: str) -> str:
    """A quantity in the canonical form kubectl shows: 400m, 2, 256Mi."""
    if key.endswith("cpu") and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    if value != value.to_integral_value():
        return str(value)
    number = int(value)
    if key.endswith(("memory", "storage")) and number:
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if number % _SUFFIX[suffix] == 0:
                return f"{number // _SUFFIX[suffix]}{suffix}"
    return str(number)


def _usage(pods: list[dict[str, Any]]) -> dict[str, Decimal]:
    """What the pods that still run use: their count and requests/limits sums."""
    running = [
        p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    used: dict[str, Decimal] = {"pods": Decimal(len(running))}
    for pod in running:
        for key, value in _pod_resources(pod.get("spec") or {}).items():
            used[key] = used.get(key, Decimal(0)) + value
    return used


def quota_status(quota: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The status the resource quota controller keeps: hard, and what the pods use of it."""
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    used = _usage(pods)
    alias = {"cpu": "requests.cpu", "memory": "requests.memory"}
    shown = {}
    for key in hard:
        name = alias.get(key, key)
        if name in used or name.startswith(("limits.", "requests.")):
            shown[key] = _fmt(used.get(name, Decimal(0)), name)
    return {"hard": hard, "used": shown}


def quota_violation(
    quota: dict[str, Any], spec: dict[str, Any], pods: list[dict[str, Any]]
) -> str | None:
    name = quota["metadata"]["name"]
    hard = {{"cpu": "requests.cpu", "memory": "requests.memory"}.get(k, k): v
            for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}  # fmt: skip
    missing = []
    for resource in ("limits.cpu", "limits.memory", "requests.cpu", "requests.memory"):
        if resource not in hard:
            continue
        kind, key = resource.split(".")
        lacking = []
        for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            res = c.get("resources") or {}
            values = res.get(kind) or {}
            if key not in values and not (kind == "requests" and key in (res.get("limits") or {})):
                lacking.append(c.get("name", ""))
        if lacking:
            missing.append(f"{resource} for: {', '.join(lacking)}")
    if missing:
        return f"failed quota: {name}: must specify {'; '.join(missing)}"
    used = _usage(pods)
    requested = {"pods": Decimal(1), **_pod_resources(spec)}
    over = [k for k in sorted(hard) if k in requested
            and used.get(k, Decimal(0)) + requested[k] > quantity(hard[k])]  # fmt: skip
    if over:

        def show(values: dict[str, Decimal]) -> str:
            return ",".join(f"{k}={_fmt(values.get(k, Decimal(0)), k)}" for k in over)

        limited = ",".join(f"{k}={hard[k]}" for k in over)
        return (f"exceeded quota: {name}, requested: {show(requested)}, used: {show(used)}, "
                f"limited: {limited}")  # fmt: skip
    return None


# -- the admission hook ------------------------------------------------------------------------


def pod_admission(store: Store) -> Callable[[ResourceType, str, dict[str, Any]], None]:
    """The hook the store runs on every create: refuses pods as the API server would."""

    def admit(rt: ResourceType, ns: str, obj: dict[str, Any]) -> None:
        if (rt.group, rt.plural) != ("", "pods"):
            return
        spec = obj.get("spec") or {}
        name = obj["metadata"]["name"]
        namespace = store.lookup(store.types[("", "v1", "namespaces")], "", ns)
        labels = (namespace.obj["metadata"].get("labels") or {}) if namespace else {}
        level = labels.get(ENFORCE, "privileged")
        found = pod_security_violations(level, spec)
        if found:
            version = labels.get(ENFORCE_VERSION, "latest")
            raise forbidden(name, f'violates PodSecurity "{level}:{version}": {", ".join(found)}')
        quotas = list(store._bucket(("", "resourcequotas"), ns))
        if not quotas:
            return
        pods = [e.obj for e in store._bucket(("", "pods"), ns)]
        for entry in quotas:
            problem = quota_violation(entry.obj, spec, pods)
            if problem:
                raise forbidden(name, problem)

    return admit
