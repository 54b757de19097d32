"""sidecar.runner.Runner: a run ends when its process does (issue 14: the Event of a
scheduled backup follows restic's exit at once, not at the Runner's next look)."""

from __future__ import annotations

import os
import statistics
import sys
import time

from sidecar.runner import WATCH_INTERVAL, Runner

# A real child process: it prints the moment it exits (CLOCK_MONOTONIC is system-wide) and
# leaves without the interpreter's teardown.
CHILD = "import os, time; time.sleep({}); print(time.monotonic(), flush=True); os._exit(0)"


def test_a_run_ends_when_its_process_exits_not_at_the_next_look():
    runner = Runner({})
    late = []
    for i in range(8):  # exits spread over the watch interval (the child starts in ~25 ms)
        seconds = WATCH_INTERVAL * (0.22 + 0.075 * i)
        result = runner.run([sys.executable, "-c", CHILD.format(seconds)])
        returned = time.monotonic()
        assert result.ok, result.stderr
        late.append(returned - float(result.stdout))
    # polling (Popen.wait with a timeout, its pauses growing to 50 ms) noticed these exits
    # 25 ms late on average
    assert statistics.median(late) < 0.01, late


def test_a_run_past_its_time_limit_is_still_interrupted():
    runner = Runner({}, stop_timeout=5, command_timeout=1)
    started = time.monotonic()
    result = runner.run([sys.executable, "-c", "import time; time.sleep(30)"])
    assert time.monotonic() - started < 5
    assert not result.ok and "restic did not finish within 1s" in result.stderr


def test_restic_runs_in_its_own_process_group_within_the_sidecars_session():
    """A terminal's Ctrl-C (its foreground process group) does not reach restic directly;
    the sidecar interrupts it. It stays in the sidecar's session, so the scheduler treats
    it as the sidecar's own work, as a restic run from a shell is."""
    child = "import os; print(os.getpid(), os.getpgid(0), os.getsid(0))"
    result = Runner({}).run([sys.executable, "-c", child])
    pid, pgid, sid = map(int, result.stdout.split())
    assert pgid == pid != os.getpgid(0)
    assert sid == os.getsid(0)
