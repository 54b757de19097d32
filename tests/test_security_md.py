"""SECURITY.md names a test for each guarantee: every file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?`")


def cited() -> list[tuple[str, str | None]]:
    """(file, test or None) for each `tests/x.py[::name]` and `::name` (same file as the
    citation before it) in SECURITY.md."""
    out, last = [], None
    for file, name in CITATION.findall((ROOT / "SECURITY.md").read_text()):
        if not file and not name:
            continue
        last = file or last
        assert last, f"::{name} cited before any file"
        out.append((last, name or None))
    return out


def test_every_cited_test_exists():
    citations = cited()
    assert len(citations) > 30
    missing = []
    for file, name in citations:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name and not re.search(rf"^def {name}\(", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    assert missing == []


def test_every_actor_of_issue_13_is_covered():
    text = (ROOT / "SECURITY.md").read_text()
    for actor in (
        "A tenant who can edit their own namespace",
        "A tenant who may only create Backups",
        "A compromised application container in a backed-up pod",
        "A reader of Events, Backup status or logs",
    ):
        assert re.search(rf"^### \d\. {actor}$", text, re.M), actor
    # every finding of issue 13 is closed, each reproduced by a test of tests/test_tenancy.py
    assert "open: issue 13" not in text.lower()
    assert len(re.findall(r"tests/test_tenancy\.py::test_", text)) >= 9
