"""Renders by shape: a template's YAML parsed once per distinct text, each render's values
filled into a copy of that parse (reconciler.controller.render uses it for the sidecar)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping

import jinja2
import jinja2.filters

# Parsing a render's YAML is most of its cost (a sidecar container is ~370 nodes, ~1-4 ms
# with libyaml's parser and PyYAML's constructor), yet Backups differ only in the values the
# templates pass through tojson. So a render by shape (Shapes.render) passes each such value
# out of band, writing a token in its place: the text then depends only on the template's
# structure (its conditionals and loops), is parsed once per distinct text, and each render
# fills the values into a copy of that parse. A value reaches the data exactly as the YAML
# parse of its tojson text would give it: only "plain" values take a token (strings, ints,
# booleans, None, lists and string-keyed mappings of those; no float, whose YAML 1.1 reading
# can differ from JSON's, and no string with a surrogate or DEL, which YAML reads
# differently or refuses); any other value is written into the text as before.
_SINK = "_restik_value_sink"
_TOKEN = f"@@restik-value-{secrets.token_hex(8)}-"  # random: no value can look like one
_NOT_PLAIN_CHARS = re.compile("[\ud800-\udfff\x7f]")
_SHAPES_MAX = 64  # distinct texts kept per renderer (a handful in practice)


@jinja2.pass_context
def tojson_or_token(ctx, value, indent=None):
    """``tojson``, or in a render by shape (a sink in the context) a token for a plain value,
    the value itself going to the sink."""
    sink = ctx.get(_SINK)
    if sink is None or indent is not None or not _plain(value):
        return jinja2.filters.do_tojson(ctx.eval_ctx, value, indent)
    sink.append(value)
    return f'"{_TOKEN}{len(sink) - 1}@@"'  # autoescape is off: a str is written as is


def _plain(value) -> bool:
    if isinstance(value, str):
        return _NOT_PLAIN_CHARS.search(value) is None
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _plain(k) and _plain(v) for k, v in value.items())
    return False


def _normal(value):
    """A plain value as the YAML parse of its JSON gives it: built-in types, lists, dicts."""
    if isinstance(value, str):
        return str.__str__(value) if type(value) is not str else value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return {str.__str__(k): _normal(v) for k, v in value.items()}


def _skeleton(data, count: int):
    """``data`` (the parse of a text with ``count`` tokens) when every token in it is a whole
    scalar, once each; None when one is inside a longer string or a key (then the values
    cannot be filled in as their YAML reading)."""
    seen: list[int] = []

    def walk(node) -> bool:
        if isinstance(node, str):
            if _TOKEN not in node:
                return True
            index = _token_index(node)
            if index is None:
                return False
            seen.append(index)
            return True
        if isinstance(node, dict):
            return all(_TOKEN not in k and walk(v) for k, v in node.items())
        if isinstance(node, list):
            return all(walk(v) for v in node)
        return True

    if not walk(data) or sorted(seen) != list(range(count)):
        return None
    return data


def _token_index(text: str) -> int | None:
    if text.startswith(_TOKEN) and text.endswith("@@"):
        digits = text[len(_TOKEN) : -2]
        if digits.isdigit() and f"{_TOKEN}{int(digits)}@@" == text:
            return int(digits)
    return None


def _filler(node):
    """A function of the values that builds a copy of the skeleton ``node`` with each token
    replaced by its value; None when ``node`` holds no token (it is then shared as it is:
    renders are never changed in place, Renderer.render hands out deep copies)."""
    if isinstance(node, str):
        index = _token_index(node)
        if index is None:
            return None
        return lambda values: _normal(values[index])
    if isinstance(node, dict):
        parts = [(k, v, _filler(v)) for k, v in node.items()]
        if all(f is None for _, _, f in parts):
            return None
        return lambda values: {k: v if f is None else f(values) for k, v, f in parts}
    if isinstance(node, list):
        items = [(v, _filler(v)) for v in node]
        if all(f is None for _, f in items):
            return None
        return lambda values: [v if f is None else f(values) for v, f in items]
    return None


class Shapes:
    """Renders of templates by shape (see above); the parses kept per text, bounded.
    ``parse``: a rendered text to data (reconciler.controller.render._to_data)."""

    def __init__(self, parse: Callable[[str], object]):
        self._parse = parse
        self._parsed: dict[str, tuple] = {}  # text -> (skeleton or None, its filler)

    def render(self, template: jinja2.Template, values: Mapping):
        sink: list = []
        text = template.render({**values, _SINK: sink})
        shape = self._parsed.get(text)
        if shape is None:
            if len(self._parsed) >= _SHAPES_MAX:
                self._parsed.clear()
            skeleton = _skeleton(self._parse(text), len(sink))
            filler = _filler(skeleton) if skeleton is not None else None
            shape = self._parsed[text] = (skeleton, filler)
        skeleton, filler = shape
        if skeleton is None:
            return self._parse(template.render(values))  # the plain way
        return skeleton if filler is None else filler(sink)
