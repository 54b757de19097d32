"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), evaluated with a real CEL.

On (``Emulator(admission_policies=True)``), every create, update, patch and delete, over HTTP
or through the emulator's own methods (and CREATE ``pods/eviction``, CONNECT ``pods/exec``),
goes through the ValidatingAdmissionPolicies stored in the emulator whose
ValidatingAdmissionPolicyBinding (validationActions Deny) matches, as the API server does
after its own validation:

- matching: the policy's ``matchConstraints`` (resourceRules with operations, groups,
  versions, resources and ``x/sub`` subresources, ``*``; excludeResourceRules;
  namespaceSelector; objectSelector), then the binding's ``matchResources``, then every
  ``matchConditions`` expression;
- CEL variables ``object``, ``oldObject`` (null on CREATE / DELETE), ``request`` (kind,
  resource, subResource, name, namespace, operation, userInfo, dryRun),
  ``namespaceObject``, ``variables`` (``spec.variables`` in order; one that fails is
  absent, so a validation that reads it fails); ``params`` is null (no paramKind support)
  and ``authorizer`` is not offered (an expression that uses it errors);
- admissionregistration.k8s.io objects themselves are exempt, as in the API server;
- the first failing validation denies with the API server's message:
  ``deployments.apps "www" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b'
  denied request: <messageExpression, else message, else "failed expression: ...">``, 403
  (or the validation's ``reason``); an expression error follows ``failurePolicy``
  (Fail, the default, denies).

CEL is the `common-expression-language` package (a CEL interpreter; Kubernetes' own
extension libraries such as ``strings.join`` or ``quantity`` are not there, so a policy
that uses them fails here on purpose). Creating a policy whose expression does not compile
is refused (422), as the API server refuses it.

Who is asking: ``Emulator.write_kubeconfig(path, user=NAME, groups=...)`` writes a kubeconfig
with a bearer token that the emulator maps to that user; a request with another token gets
401; a request without one, and every call the emulator makes for itself (its controllers,
``emu.create``), is the cluster admin ``kubernetes-admin`` (group ``system:masters``).
"""

from __future__ import annotations

import contextvars
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cel

from .errors import ApiError
from .rules import Cause, _invalid, _selector_matches

if TYPE_CHECKING:
    from .resources import ResourceType
    from .store import Store

GROUP = "admissionregistration.k8s.io"
POLICIES = (GROUP, "validatingadmissionpolicies")
BINDINGS = (GROUP, "validatingadmissionpolicybindings")
REASON_CODES = {"Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413,
                "Unauthorized": 401}  # fmt: skip


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: tuple[str, ...] = ()


ADMIN = UserInfo("kubernetes-admin", ("system:masters", "system:authenticated"))
# Who makes the request being served: set by the HTTP handler for the request's thread.
CURRENT_USER: contextvars.ContextVar[UserInfo] = contextvars.ContextVar("user", default=ADMIN)


@dataclass(frozen=True)
class Attributes:
    """One admission request: what the CEL ``request``, ``object`` and ``oldObject`` hold."""

    operation: str  # CREATE UPDATE DELETE CONNECT
    rt: ResourceType
    namespace: str
    name: str
    subresource: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    dry_run: bool
    user: UserInfo


@functools.lru_cache(maxsize=512)
def compile_expression(source: str) -> cel.Program:
    """A compiled CEL program; ValueError when ``source`` does not compile."""
    return cel.compile(source)


def compile_errors(obj: dict[str, Any]) -> list[Cause]:
    """Validation of a ValidatingAdmissionPolicy: every expression must compile."""
    spec = obj.get("spec") or {}
    causes = []
    for section, keys in (("matchConditions", ("expression",)), ("variables", ("expression",)),
                          ("validations", ("expression", "messageExpression"))):  # fmt: skip
        for i, item in enumerate(spec.get(section) or []):
            for key in keys:
                source = (item or {}).get(key)
                if source is None:
                    continue
                try:
                    compile_expression(source)
                except Exception as exc:
                    causes.append(_invalid(f"spec.{section}[{i}].{key}", source,
                                           f"compilation failed: {exc}"))  # fmt: skip
    if not spec.get("validations") and not spec.get("auditAnnotations"):
        causes.append(_invalid("spec.validations", [], "validations and auditAnnotations "
                               "may not both be empty"))  # fmt: skip
    return causes


# -- matching ------------------------------------------------------------------------------------


def _rule_matches(rule: dict[str, Any], a: Attributes) -> bool:
    def has(field: str, value: str) -> bool:
        values = rule.get(field) or []
        return "*" in values or value in values

    if not (has("operations", a.operation) and has("apiGroups", a.rt.group)
            and has("apiVersions", a.rt.version)):  # fmt: skip
        return False
    scope = rule.get("scope") or "*"
    if scope != "*" and scope != ("Namespaced" if a.rt.namespaced else "Cluster"):
        return False
    for resource in rule.get("resources") or []:
        res, _, sub = resource.partition("/")
        if (res in ("*", a.rt.plural)) and (
            sub in ("*", a.subresource) if a.subresource else not sub
        ):
            return True
    return False


def _resources_match(match: dict[str, Any], a: Attributes, store: Store, policy: bool) -> bool:
    rules = match.get("resourceRules") or []
    if (policy or rules) and not any(_rule_matches(r, a) for r in rules):
        return False
    if any(_rule_matches(r, a) for r in match.get("excludeResourceRules") or []):
        return False
    ns_selector = match.get("namespaceSelector") or {}
    if ns_selector and a.rt.namespaced:
        ns = store.lookup(store.types[("", "v1", "namespaces")], "", a.namespace)
        labels = (ns.obj["metadata"].get("labels") or {}) if ns else {}
        if not _selector_matches(ns_selector, labels):
            return False
    obj_selector = match.get("objectSelector") or {}
    if obj_selector:
        labelsets = [((o.get("metadata") or {}).get("labels") or {}) for o in (a.obj, a.old) if o]
        if not any(_selector_matches(obj_selector, labels) for labels in labelsets):
            return False
    return True


# -- evaluation ----------------------------------------------------------------------------------


def _request(a: Attributes) -> dict[str, Any]:
    return {
        "uid": str(uuid.uuid4()),
        "kind": {"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind},
        "resource": {"group": a.rt.group, "version": a.rt.version, "resource": a.rt.plural},
        "subResource": a.subresource,
        "requestKind": {"group": a.rt.group, "version": a.rt.version, "kind": a.rt.kind},
        "requestResource": {
            "group": a.rt.group,
            "version": a.rt.version,
            "resource": a.rt.plural,
        },
        "name": a.name,
        "namespace": a.namespace,
        "operation": a.operation,
        "userInfo": {"username": a.user.username, "groups": list(a.user.groups)},
        "dryRun": a.dry_run,
    }


class _ExpressionError(Exception):
    def __init__(self, source: str, cause: Exception):
        super().__init__(f"expression '{source}' resulted in error: {cause}")


def _run(source: str, context: dict[str, Any]) -> Any:
    try:
        return compile_expression(source).execute(context)
    except Exception as exc:
        raise _ExpressionError(source, exc) from None


def _deny(a: Attributes, policy: str, binding: str, message: str, reason: str) -> ApiError:
    resource = f"{a.rt.plural}.{a.rt.group}" if a.rt.group else a.rt.plural
    details: dict[str, Any] = {"name": a.name, "kind": a.rt.plural}
    if a.rt.group:
        details["group"] = a.rt.group
    text = (f'{resource} "{a.name}" is forbidden: ValidatingAdmissionPolicy \'{policy}\' '
            f"with binding '{binding}' denied request: {message}")  # fmt: skip
    code = REASON_CODES.get(reason, 403)
    return ApiError(code, reason if reason in REASON_CODES else "Forbidden", text, details)


def evaluate(policy: dict[str, Any], a: Attributes, store: Store) -> tuple[str, str] | None:
    """(message, reason) of the first validation ``a`` fails, None if it passes or the
    policy does not apply; an expression error raises _ExpressionError."""
    spec = policy.get("spec") or {}
    ns_type = store.types[("", "v1", "namespaces")]
    ns_entry = store.lookup(ns_type, "", a.namespace) if a.namespace else None
    context: dict[str, Any] = {
        "object": a.obj,
        "oldObject": a.old,
        "request": _request(a),
        "namespaceObject": ns_entry.copy() if ns_entry else None,
        "params": None,
        "variables": {},
    }
    for condition in spec.get("matchConditions") or []:
        result = _run(condition["expression"], context)
        if result is not True:
            if result is not False:
                raise _ExpressionError(condition["expression"], TypeError("not a bool"))
            return None
    variables: dict[str, Any] = {}
    for variable in spec.get("variables") or []:
        context["variables"] = dict(variables)
        try:
            variables[variable["name"]] = _run(variable["expression"], context)
        except _ExpressionError:
            continue  # absent: a validation that reads it fails with an error
    context["variables"] = variables
    for validation in spec.get("validations") or []:
        result = _run(validation["expression"], context)
        if result is True:
            continue
        if result is not False:
            raise _ExpressionError(validation["expression"], TypeError("not a bool"))
        message = ""
        if validation.get("messageExpression"):
            try:
                value = _run(validation["messageExpression"], context)
                message = value.strip() if isinstance(value, str) else ""
            except _ExpressionError:
                message = ""
        message = (
            message
            or validation.get("message")
            or (f"failed expression: {validation['expression']}")
        )
        return message, validation.get("reason") or "Forbidden"
    return None


def policy_admission(store: Store) -> Callable[[Attributes], None]:
    """The hook the store runs on every write: raises the denial of the first binding whose
    policy refuses the request."""

    def admit(a: Attributes) -> None:
        if a.rt.group == GROUP:
            return  # admission configuration is exempt, so no policy can lock itself in
        bindings = list(store._bucket(BINDINGS))
        if not bindings:
            return
        policies = {e.name: e.obj for e in store._bucket(POLICIES)}
        for entry in bindings:
            spec = entry.obj.get("spec") or {}
            policy = policies.get(spec.get("policyName", ""))
            if policy is None or "Deny" not in (spec.get("validationActions") or []):
                continue
            constraints = (policy.get("spec") or {}).get("matchConstraints") or {}
            if not _resources_match(constraints, a, store, policy=True):
                continue
            if not _resources_match(spec.get("matchResources") or {}, a, store, policy=False):
                continue
            name, binding = policy["metadata"]["name"], entry.name
            try:
                denied = evaluate(policy, a, store)
            except _ExpressionError as exc:
                if (policy.get("spec") or {}).get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise _deny(a, name, binding, str(exc), "Forbidden") from None
            if denied is not None:
                raise _deny(a, name, binding, *denied)

    return admit


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized", {})
