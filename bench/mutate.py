"""Mutation testing of the pure core with cosmic-ray: a score per module, non-zero exit below 90 %.

    python bench/mutate.py                       # every module (what `make mutate` runs)
    python bench/mutate.py reconciler/controller/plan.py    # one module
    python bench/mutate.py --survivors           # also print each surviving mutant's diff
    python bench/mutate.py --rev COMMIT          # the tree of a commit (a "before" figure)

cosmic-ray makes the mutants (every operator it has, on the whole module: decorated functions
such as the ``@lru_cache``/``@property`` ones and module-level constants included) and keeps
them in its session database (``build/mutation/<module>.sqlite``, readable with ``cr-report``).
This script runs them: it works on a copy of the source tree (the worktree is never edited),
and instead of starting a new Python for every mutant (about a second of imports each), it
imports pytest and the third-party libraries once and forks one child per mutant, which
imports the mutated module afresh and runs only the fast pure test files that exercise it
(``MODULES``) with ``-x``. A mutant is killed when that run fails or times out.

To be quick, a first run under coverage records which tests execute each line; a mutant first
meets only the tests that run its statement and, if it survives them, every other test of
the module's files (a cached result can hide a line from the tests that rely on it), so a
survivor has always met them all.

Mutants inside type annotations are marked skipped, not run: every module starts with
``from __future__ import annotations``, so an annotation is never evaluated and such a mutant
is equivalent by construction.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SESSIONS = REPO / "build" / "mutation"
THRESHOLD = 90.0

# module -> the pure test files that exercise it, fastest killers first (-x stops at the first
# failure). Not the emulator, restic or property tests: too slow to run once per mutant.
MODULES = {
    "reconciler/api/schedule.py": ["tests/test_schedule.py"],
    "reconciler/api/duration.py": ["tests/test_schedule.py"],
    "reconciler/api/fields.py": ["tests/test_backup.py", "tests/test_backup_rules.py"],
    "reconciler/controller/podtemplate.py": ["tests/test_workload.py", "tests/test_plan.py"],
    "reconciler/controller/plan.py": ["tests/test_plan.py"],
    "reconciler/api/backup.py": [
        "tests/test_backup.py",
        "tests/test_backup_rules.py",
        "tests/test_render.py",
    ],
    # parts of the Backup model split out of api/backup.py (issue 11's size bound)
    "reconciler/api/destination.py": ["tests/test_backup.py", "tests/test_backup_rules.py"],
    "reconciler/api/retention.py": ["tests/test_backup.py", "tests/test_backup_rules.py"],
    "reconciler/api/resources.py": [
        "tests/test_backup.py",
        "tests/test_backup_rules.py",
        "tests/test_render.py",
    ],
    "reconciler/controller/render.py": ["tests/test_render.py", "tests/test_plan.py"],
}
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider"]
NO_TESTS = 5  # pytest's exit code when every test was deselected
# Imported once in the parent so that children do not pay for them; none imports a mutated
# module (checked).
PRELOAD = (
    "pytest",
    "tests.emulator",
    "hypothesis",
    "jinja2",
    "croniter",
    "ruamel.yaml",
    "jsonschema",
    "pykube",
    "tenacity",
    "prometheus_client",
    "yaml",
)


def copy_tree(dest: Path, rev: str | None = None) -> None:
    """The files git knows (tracked and new, not ignored) as they are in the worktree, or the
    tree of commit ``rev``."""
    if rev is not None:
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", rev], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        # The worktree's test helpers (they parse the examples once per process, not once
        # per child): same builders, so the rev's tests mean what they meant.
        shutil.copy2(REPO / "tests" / "factories.py", dest / "tests" / "factories.py")
        return
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) positions of every annotation, if the module never evaluates them."""
    tree = ast.parse(source)
    future = any(
        isinstance(node, ast.ImportFrom)
        and node.module == "__future__"
        and any(a.name == "annotations" for a in node.names)
        for node in tree.body
    )
    if not future:
        return []
    found = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
            annotations += [a.annotation for a in every if a is not None]
            annotations.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
        for a in annotations:
            if a is not None:
                found.append(((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)))
    return found


def init_session(module: str, db_path: Path, workdir: Path) -> None:
    from cosmic_ray.commands import init
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    db_path.parent.mkdir(parents=True, exist_ok=True)
    db_path.unlink(missing_ok=True)
    spans = annotation_spans((workdir / module).read_text(encoding="utf-8"))
    with use_db(str(db_path), WorkDB.Mode.create) as db:
        init([Path(module)], db, {})
        for item in db.work_items:
            start = tuple(item.mutations[0].start_pos)
            if any(lo <= start < hi for lo, hi in spans):
                db.set_result(
                    item.job_id,
                    WorkResult(
                        worker_outcome=WorkerOutcome.SKIPPED,
                        output="in a type annotation: never evaluated",
                    ),
                )


class _Contexts:
    """A pytest plugin: each test's coverage is recorded under its node id."""

    def __init__(self, cov):
        self.cov = cov

    def pytest_runtest_setup(self, item):
        self.cov.switch_context(item.nodeid)


def run_tests(
    workdir: Path, tests: list[str], timeout: float, log: Path, coverage_file: Path | None = None
) -> tuple[int, float]:
    """(pytest's exit code, seconds): the tests in a forked child, which imports reconciler
    afresh; a timeout counts as a failure (1)."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 2
        try:
            os.setpgid(0, 0)
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(workdir)
            sys.path.insert(0, str(workdir))
            import pytest

            if coverage_file is None:
                code = int(pytest.main([*PYTEST_ARGS, *tests]))
            else:
                import coverage

                cov = coverage.Coverage(data_file=str(coverage_file), include=["reconciler/*"])
                cov.start()
                code = int(pytest.main([*PYTEST_ARGS, *tests], plugins=[_Contexts(cov)]))
                cov.stop()
                cov.save()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = started + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - started
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return 1, time.monotonic() - started
        time.sleep(0.01)


def tests_by_line(coverage_file: Path, module_file: Path) -> dict[int, set[str]]:
    """line -> node ids of the tests that executed it (import time is not a test)."""
    import coverage

    data = coverage.CoverageData(basename=str(coverage_file))
    data.read()
    by_line = data.contexts_by_lineno(str(module_file.resolve())) or {}
    return {line: {c for c in ctx if c} for line, ctx in by_line.items()}


def statement_lines(source: str) -> dict[int, range]:
    """line -> the lines of the innermost statement holding it (a compound one: its header)."""
    out: dict[int, range] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.stmt):
            continue
        end = node.end_lineno
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            end = body[0].lineno - 1
        lines = range(node.lineno, max(end, node.lineno) + 1)
        for line in lines:
            if line not in out or len(lines) < len(out[line]):
                out[line] = lines
    return out


def mutate_module(module: str, workdir: Path, db_path: Path, log: Path) -> None:
    import cosmic_ray.plugins
    from cosmic_ray.mutating import use_mutation
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult

    tests = [t for t in MODULES[module] if (workdir / t).is_file()]
    coverage_file = log.with_suffix(".coverage")
    code, seconds = run_tests(workdir, tests, 600, log, coverage_file)
    if code != 0:
        sys.exit(f"{module}: the tests fail without any mutation:\n{log.read_text()}")
    timeout = 10 + 5 * seconds
    covered = tests_by_line(coverage_file, workdir / module)
    statements = statement_lines((workdir / module).read_text(encoding="utf-8"))
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        pending = sorted(
            db.pending_work_items,
            key=lambda w: (w.mutations[0].start_pos, w.mutations[0].operator_name),
        )
        for n, item in enumerate(pending, 1):
            spec = item.mutations[0]
            operator = cosmic_ray.plugins.get_operator(spec.operator_name)(**spec.operator_args)
            path = workdir / spec.module_path
            with use_mutation(path, operator, spec.occurrence) as (original, mutated):
                if mutated is None:
                    db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.NO_TEST))
                    continue
                line = spec.start_pos[0]
                first = sorted(
                    {t for ln in statements.get(line, (line,)) for t in covered.get(ln, ())}
                )
                # Killed by a failing test (1); then the other tests of the files, each
                # with cold caches; any other outcome (say, a node id pytest could not
                # find) is settled by all the tests.
                if first:
                    code = run_tests(workdir, first, timeout, log)[0]
                    if code == 0:
                        rest = [arg for t in first for arg in ("--deselect", t)]
                        code = run_tests(workdir, [*tests, *rest], timeout, log)[0]
                        code = 0 if code == NO_TESTS else code  # the first run had them all
                if not first or code not in (0, 1):
                    code = run_tests(workdir, tests, timeout, log)[0]
                passed = code == 0
            diff = "".join(
                difflib.unified_diff(
                    original.splitlines(keepends=True),
                    mutated.splitlines(keepends=True),
                    str(spec.module_path),
                    str(spec.module_path),
                    n=0,
                )
            )
            outcome = TestOutcome.SURVIVED if passed else TestOutcome.KILLED
            db.set_result(
                item.job_id,
                WorkResult(worker_outcome=WorkerOutcome.NORMAL, test_outcome=outcome, diff=diff),
            )
            if sys.stderr.isatty():
                print(f"\r{module}: {n}/{len(pending)}", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)


def tally(db_path: Path) -> tuple[dict, list]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    counts = {"mutants": 0, "killed": 0, "survived": 0, "skipped": 0}
    survivors = []
    with use_db(str(db_path), WorkDB.Mode.open) as db:
        for item, result in db.completed_work_items:
            if result.worker_outcome in (WorkerOutcome.SKIPPED, WorkerOutcome.NO_TEST):
                counts["skipped"] += 1
                continue
            counts["mutants"] += 1
            if result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
                survivors.append((item.mutations[0], result.diff))
            else:
                counts["killed"] += 1
    survivors.sort(key=lambda s: s[0].start_pos)
    return counts, survivors


def preload(workdir: Path) -> None:
    """Import, once for all children, what costs time and is never mutated: the third-party
    libraries, from the copy."""
    sys.dont_write_bytecode = True  # a mutant must never be run from a stale .pyc
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    # tests.factories is not preloaded: it imports the modules under test (a preloaded copy
    # would hand every child the unmutated functions)
    mutated = {m.removesuffix(".py").replace("/", ".") for m in MODULES}
    loaded = mutated & set(sys.modules)
    assert not loaded, f"the parent must not import the code under test: {loaded}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all)")
    parser.add_argument("--survivors", action="store_true", help="print each survivor's diff")
    parser.add_argument(
        "--report-only", action="store_true", help="only report the last sessions' results"
    )
    parser.add_argument(
        "--rev", help="mutate the tree of this commit instead of the worktree (e.g. a baseline)"
    )
    args = parser.parse_args(argv)
    modules = args.modules or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")

    where = SESSIONS / args.rev if args.rev else SESSIONS
    sessions = {m: where / (Path(m).stem + ".sqlite") for m in modules}
    # Stopped with SIGTERM: unwind, so the mutated copy is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.report_only:
        with tempfile.TemporaryDirectory(prefix="restik-mutate-") as tmp:
            workdir = Path(tmp) / "src"
            copy_tree(workdir, args.rev)
            preload(workdir)
            for module in modules:
                init_session(module, sessions[module], workdir)
                mutate_module(module, workdir, sessions[module], Path(tmp) / "pytest.log")

    print(f"| {'module':<24} | mutants | killed | survived | score | skipped |")
    print(f"|{'-' * 26}|---------|--------|----------|-------|---------|")
    missing = [str(sessions[m]) for m in modules if not sessions[m].is_file()]
    if missing:
        parser.error(f"no session to report: {', '.join(missing)} (run without --report-only)")
    failed = False
    survivors = []
    for module in modules:
        counts, found = tally(sessions[module])
        survivors += found
        score = 100.0 * counts["killed"] / counts["mutants"] if counts["mutants"] else 100.0
        failed |= score < THRESHOLD
        print(
            f"| {module:<24} | {counts['mutants']:>7} | {counts['killed']:>6} "
            f"| {counts['survived']:>8} | {score:>4.0f} % | {counts['skipped']:>7} |"
        )
    if args.survivors:
        for spec, diff in survivors:
            print(
                f"\n# {spec.module_path}:{spec.start_pos[0]} {spec.operator_name}\n{diff}", end=""
            )
    if failed:
        print(f"below {THRESHOLD:.0f} % in at least one module", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
