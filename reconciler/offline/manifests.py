"""Read and write manifest files for the offline commands: round-trip YAML, loaded safely."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import YAMLError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZE_FILES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


class ManifestError(ValueError):
    """Input that cannot be processed; the message names the file and the object."""


@dataclass
class Document:
    """One YAML document of one source, kept as ruamel round-trip data."""

    source: str
    index: int
    data: object

    @property
    def where(self) -> str:
        return f"{self.source} (document {self.index + 1})"


@dataclass
class Source:
    name: str
    documents: list[Document]
    indent: tuple[int, int]
    explicit_start: bool


def _yaml(indent: tuple[int, int] = (2, 0)) -> YAML:
    y = YAML(typ="rt", pure=True)
    y.preserve_quotes = True
    y.width = 1 << 16
    mapping, offset = indent
    y.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return y


def guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, dash offset) of the first nested block in ``text``; (2, 0) if unsure."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    mapping = offset = None
    for above, line in pairwise(lines):
        if not above.rstrip().endswith(":"):
            continue
        parent = len(above) - len(above.lstrip())
        child = len(line) - len(line.lstrip())
        if child <= parent and not line.lstrip().startswith("- "):
            continue
        if line.lstrip().startswith("- "):
            if offset is None:
                offset = child - parent
        elif mapping is None:
            mapping = child - parent
        if mapping is not None and offset is not None:
            break
    return (mapping or 2, max(offset or 0, 0))


def read_sources(paths: list[str], stdin=None) -> list[tuple[str, str]]:
    """(name, text) for each FILE, each manifest under DIR (sorted), or stdin for ``-``."""
    out: list[tuple[str, str]] = []
    for path in paths:
        if path == "-":
            stream = stdin if stdin is not None else sys.stdin
            out.append(("<stdin>", stream.read()))
            continue
        p = Path(path)
        if p.is_dir():
            files = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and f.suffix in MANIFEST_SUFFIXES and f.name not in KUSTOMIZE_FILES
            )
            out.extend((str(f), _read(f)) for f in files)
        elif p.is_file():
            out.append((str(p), _read(p)))
        else:
            raise ManifestError(f"{path}: no such file or directory")
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None


def parse_source(name: str, text: str) -> Source:
    """Load every document of one file; refuse tags and anything but plain data."""
    indent = guess_indent(text)
    try:
        docs = list(_yaml(indent).load_all(text))
    except YAMLError as exc:
        raise ManifestError(f"{name}: not valid YAML: {_yaml_problem(exc)}") from None
    except Exception as exc:  # ruamel raises a few non-YAMLError types on odd input
        raise ManifestError(f"{name}: not valid YAML: {_first_line(exc)}") from None
    documents = []
    for i, data in enumerate(docs):
        doc = Document(name, i, data)
        if data is None:
            continue
        _check_plain(data, doc.where, "")
        if not isinstance(data, Mapping):
            raise ManifestError(f"{doc.where}: a manifest must be a mapping, got {_kind_of(data)}")
        documents.append(doc)
    explicit = text.lstrip().startswith("---")
    return Source(name, documents, indent, explicit)


def _check_plain(node: object, where: str, path: str) -> None:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if isinstance(node, TaggedScalar) or (tag and isinstance(node, CommentedMap | CommentedSeq)):
        raise ManifestError(f"{where}: {path or 'document'}: YAML tags are not allowed ({tag})")
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise ManifestError(
                    f"{where}: {path or 'document'}: keys must be strings, got {key!r}"
                )
            _check_plain(value, where, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_plain(value, where, f"{path}[{i}]")
    elif not isinstance(node, str | int | float | bool | date | type(None)):
        raise ManifestError(f"{where}: {path}: unsupported value of type {type(node).__name__}")


def _kind_of(data: object) -> str:
    return "a list" if isinstance(data, list) else type(data).__name__


def _yaml_problem(exc: YAMLError) -> str:
    """What is wrong and where, from a marked YAML error; never the values (a Secret's data)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if not problem or mark is None:
        return _first_line(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    if problem.startswith("found duplicate key"):
        key = re.match(r'found duplicate key "(.*?)" with value', problem)
        first = getattr(exc, "context_mark", None)
        name = key.group(1) if key else "?"
        seen = f" (the mapping starts at line {first.line + 1})" if first is not None else ""
        return f"duplicate key {name!r} at {where}{seen}"
    return f"{problem} at {where}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[:4]) if lines else type(exc).__name__


def object_label(obj: Mapping) -> str:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    ns = meta.get("namespace")
    name = meta.get("name", "<unnamed>")
    return f"{obj.get('kind', '<no kind>')} {ns + '/' if ns else ''}{name}"


def iter_objects(doc: Document) -> Iterator[tuple[str, Mapping]]:
    """(where, object) for a document, expanding ``kind: List``; checks kind and name."""
    data = doc.data
    if data.get("kind") == "List" and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            where = f"{doc.where} items[{i}]"
            if not isinstance(item, Mapping):
                raise ManifestError(f"{where}: a manifest must be a mapping, got {_kind_of(item)}")
            yield where, _checked(item, where)
    else:
        yield doc.where, _checked(data, doc.where)


def _checked(obj: Mapping, where: str) -> Mapping:
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        raise ManifestError(f"{where}: kind: required")
    if not isinstance(obj.get("apiVersion"), str) or not obj.get("apiVersion"):
        raise ManifestError(f"{where}: {object_label(obj)}: apiVersion: required")
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        raise ManifestError(f"{where}: {obj['kind']}: metadata: required")
    if not isinstance(meta.get("name"), str) or not meta.get("name"):
        raise ManifestError(f"{where}: {obj['kind']}: metadata.name: required")
    return obj


def dump(data: object, indent: tuple[int, int] = (2, 0)) -> str:
    buf = io.StringIO()
    _yaml(indent).dump(data, buf)
    return buf.getvalue()


def dump_stream(sources: list[Source]) -> str:
    """Every document of every source as one YAML stream, each keeping its file's indent."""
    parts = []
    for source in sources:
        for doc in source.documents:
            parts.append(dump(doc.data, source.indent))
    return "".join(("---\n" if i else "") + p for i, p in enumerate(parts))
