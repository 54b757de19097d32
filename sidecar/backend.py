"""restic's backend retries read from its stderr: whether (and since when) the repository's
backend fails every request, so a run can give up on a backend that is down."""

from __future__ import annotations

import re
from dataclasses import dataclass

# restic retries a failing backend request after a growing pause and says so on stderr, in
# the same words since 0.9: 0.14 gives up after 10 attempts (a minute or two), 0.17+ only
# after 15 minutes per request (a repository that is down when a run starts keeps the run
# waiting that long). A success after retries is reported too.
_RETRYING = re.compile(r"^(?:\x1b\[2K)?(\S.*?) returned error, retrying after \S+?: (.+)$")
_BUCKET_MISSING = re.compile(r"NoSuchBucket|bucket does not exist", re.IGNORECASE)
# The end of a retried request: a success, or (0.17+) restic giving up on it.
_RETRY_ENDED = re.compile(
    r"^(?:\x1b\[2K)?\S.*?(?: operation successful after \d+ retries| failed: )"
)
# restic's longest pause between two retries of a request (backoff's 60 s, +50 % jitter),
# with a margin: a request of 0.14 that ran out of its 10 attempts ends without a word, so
# retries falling silent for longer than this ends the failure too.
RETRY_SILENCE = 120.0


def last_backend_error(stderr: str) -> str | None:
    """The error of restic's last backend retry in its stderr, if it retried at all."""
    found = None
    for line in stderr.splitlines():
        m = _RETRYING.match(line.strip())
        if m:
            found = m.group(2).strip()
    return found


@dataclass
class BackendWatch:
    """Fed restic's stderr line by line: since when its backend has failed without a single
    success in between (every request retried, none answered)."""

    failing_since: float | None = None
    last_retry: float = 0.0
    last_error: str = ""
    # S3 answers a missing bucket with NoSuchBucket, which restic 0.17+ retries like any
    # error for 15 minutes (0.14 gave up at once): the repository is missing, `restic init`
    # creates the bucket, so waiting is pointless.
    bucket_missing: bool = False

    def feed(self, line: str, now: float) -> None:
        line = line.strip()
        m = _RETRYING.match(line)
        if m:
            if self.failing_for(now) == 0.0:
                self.failing_since = now
            self.last_retry = now
            self.last_error = m.group(2).strip()
            if m.group(1).startswith("Stat(<config/>") and _BUCKET_MISSING.search(line):
                self.bucket_missing = True
        elif _RETRY_ENDED.match(line):
            self.failing_since = None

    def failing_for(self, now: float) -> float:
        if self.failing_since is None or now - self.last_retry > RETRY_SILENCE:
            return 0.0
        return now - self.failing_since
