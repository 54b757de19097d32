"""A finished run is logged as loud as it matters, with the next step for a failure."""

from __future__ import annotations

import logging

import pytest

from reconciler.api.backup import parse_backup
from sidecar.main import run_log_level
from sidecar.outcome import SECRET_MISSING, Outcome
from sidecar.restic import Failure
from tests.factories import backup

BACKUP = parse_backup(backup())


def outcome(**kw) -> Outcome:
    return Outcome(success=False, message="x", duration=1.0, **kw)


def test_a_success_is_info():
    assert run_log_level(Outcome(success=True, message="ok", duration=1.0), BACKUP) == (
        logging.INFO,
        "",
    )


@pytest.mark.parametrize(
    ("kw", "level", "hint"),
    [
        (
            {"failure": Failure.WRONG_PASSWORD},
            logging.ERROR,
            "Secret web/www-restic, key 'password'",
        ),
        ({"failure": Failure.NO_REPOSITORY}, logging.ERROR, "spec.destination"),
        ({"reason": SECRET_MISSING}, logging.ERROR, "create the Secret web/www-restic"),
        ({"failure": Failure.LOCKED}, logging.WARNING, "restic list locks"),
        ({"failure": Failure.OTHER}, logging.WARNING, ""),
        ({}, logging.WARNING, ""),
    ],
)
def test_a_failure_is_a_warning_or_an_error_with_the_next_step(kw, level, hint):
    got_level, got_hint = run_log_level(outcome(**kw), BACKUP)
    assert got_level == level
    assert hint in got_hint
    if hint:
        assert got_hint.startswith(" (next: ")
