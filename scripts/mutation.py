"""Mutation testing (mutmut 3) of the modules that carry linli's guarantees; prints the survivors.

mutmut 3 names a mutant after its file's path (`src/` stripped) and puts only `mutants/` and
`mutants/src` on `sys.path`. The run happens in a stage, `.mutation/`, a copy of the repository's
files, so that its tests (those that start the `linli` command too, through PYTHONPATH) import
the mutated copy, never the editable install. The stage is made anew for each run.

Exit codes: 0 every mutant killed or reviewed; 1 a survivor not listed as reviewed (or a score
under the bar); 2 a usage error (unknown module, bad ref, mutmut missing); 3 mutmut itself
failed (its output says why: most often a test that fails on the unmutated code).
"""

from __future__ import annotations

import argparse
import fcntl
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import mutation_leftovers as leftovers

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".mutation"
BAR = 0.90  # the share of mutants killed (or reviewed as equivalent) each run must reach


@dataclass(frozen=True)
class Module:
    path: str  # in the repository
    tests: tuple[str, ...]  # the test files that exercise it (mutmut runs only those that hit a mutant)
    functions: tuple[str, ...] = ("*",)  # of mutmut's names (`x_f`, `xǁClassǁmethod`), globs

    @property
    def name(self) -> str:
        """The module's dotted name, as mutmut names its mutants."""
        return self.path.removeprefix("src/").removesuffix(".py").replace("/", ".")

    def globs(self) -> list[str]:
        return [f"{self.name}.{f}__mutmut_*" for f in self.functions]


MODULES = {
    "buffer": Module("src/linli/edge/buffer.py", ("tests/edge/test_buffer.py", "tests/edge/test_writer.py")),
    "spool": Module(
        "src/linli/edge/spool.py",
        ("tests/edge/test_spool.py", "tests/edge/test_full_disk.py", "tests/edge/test_mqtt_batches.py"),
    ),
    # test_full_disk.py: a disk that refuses to drop written lines (`_settled`) is tested only there.
    "writer": Module(
        "src/linli/edge/writer.py",
        (
            "tests/edge/test_writer.py",
            "tests/edge/test_writer_batches.py",
            "tests/edge/test_writer_contract.py",
            "tests/edge/test_full_disk.py",
        ),
    ),
    "store": Module(
        "src/linli/cloud/notifier/store.py",
        (
            "tests/cloud/test_state.py",
            "tests/cloud/notifier/test_claim_races.py",
            "tests/cloud/notifier/test_notifier.py",
            "tests/cloud/notifier/test_grouping.py",
        ),
    ),
    # Of the notifier's records (split out of store.py), the silences and the subscriptions.
    "records": Module(
        "src/linli/cloud/notifier/records.py",
        (
            "tests/cloud/test_state.py",
            "tests/cloud/notifier/test_records.py",
            "tests/cloud/notifier/test_silences.py",
            "tests/cloud/notifier/test_notifier.py",
        ),
        ("xǁRecordsǁ*silence*", "xǁRecordsǁ*subscription*", "xǁRecordsǁseed"),
    ),
    # Of the waste service's outbox, the class that keeps lines until the store has them, not
    # the line formatters (what the dashboards show, tested through the store in the same file).
    "outbox": Module(
        "src/linli/cloud/waste/outbox.py", ("tests/cloud/waste/test_waste_store.py",), ("xǁOutboxǁ*",)
    ),
    # Of the waste service's state, its claims, the delivery outbox and the dispatch lease.
    "state": Module(
        "src/linli/cloud/waste/state.py",
        ("tests/cloud/waste/test_waste_state.py",),
        (
            "xǁWasteStateǁclaim_*",
            "xǁWasteStateǁhold",
            "xǁWasteStateǁrelease",
            "xǁWasteStateǁorphans",
            "xǁWasteStateǁput",
            "xǁWasteStateǁpending",
            "xǁWasteStateǁwaiting",
            "xǁWasteStateǁwritten",
            "xǁLeadershipǁ*",
        ),
    ),
    "bookings": Module(
        "src/linli/cloud/waste/bookings.py",
        ("tests/cloud/waste/test_bookings.py", "tests/cloud/waste/test_booking_races.py"),
    ),
}

# Lines whose mutants change nothing a caller can see: what is logged (mutmut's
# `do_not_mutate_patterns`, one regex a line). Anything else equivalent is listed, with why,
# in docs/reliability.md ("Mutation testing"), and in REVIEWED below.
NOISE = [r"\blog\.(debug|info|warning|error|exception)\("]

# Survivors reviewed as equivalent, and why (docs/reliability.md lists them too); `mutmut show
# NAME` in .mutation/ shows each. A name's number changes when its function changes: review again.
_LOG_ONLY = "only which line is logged: `was` and the first `_held` on PostgreSQL choose the log line"
_STATE = "linli.cloud.waste.state."
_BOOKINGS = "linli.cloud.waste.bookings."
_SPOOL = "linli.edge.spool.xǁSpoolǁ"
_BUFFER = "linli.edge.buffer.xǁDurableBufferǁ"
_STORE = "linli.cloud.notifier.store.xǁStoreǁ"
_WRITER = "linli.edge.writer.xǁBatchWriterǁ"
# A float stored and read back from PostgreSQL or SQLite is the same float, so a tolerance
# dropped (math.isclose's default rel_tol=1e-9 then) changes nothing; and for a window's times
# (1.8e9 s) that default rel_tol is 1.8 s, more than abs_tol=1e-3 or 1.001 s.
_TOLERANCE = "a tolerance changed where math.isclose's default rel_tol already decides (see above)"
REVIEWED: dict[str, str] = {
    **{f"{_STATE}xǁLeadershipǁ__init____mutmut_{n}": _LOG_ONLY for n in (6, 7, 8, 9)},
    **{f"{_STATE}xǁLeadershipǁheld__mutmut_{n}": _LOG_ONLY for n in (9, 14, 15, 16, 17)},
    f"{_STATE}xǁLeadershipǁ__init____mutmut_5": "the first question skipped only while monotonic() < "
    "2 x recheck_s (4 s after boot)",
    f"{_STATE}xǁLeadershipǁheld__mutmut_7": "`<=` for `<`: differs only when two monotonic readings "
    "are exactly recheck_s apart",
    f"{_STATE}xǁLeadershipǁ_take__mutmut_4": "SQLAlchemy upper-cases the isolation level it is given",
    f"{_STATE}xǁWasteStateǁorphans__mutmut_14": "an unquoted table name: any case is the same name",
    f"{_STATE}xǁWasteStateǁorphans__mutmut_16": "unquoted column names: any case is the same name",
    **{f"{_BOOKINGS}xǁBookingsǁ_same__mutmut_{n}": _TOLERANCE for n in (17, 24, 25, 31, 32, 40, 49)},
    **{
        f"{_BOOKINGS}xǁBookingsǁ__init____mutmut_{n}": "zip's strict over (x, y) pairs: always two"
        for n in (7, 9, 10)
    },
    f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_17": "BookingRequest already refuses lat without lon",
    **{
        f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_{n}": "`<` for `<=`: a pile exactly on the district's "
        "box edge, in float metres"
        for n in (28, 29, 30, 31)
    },
    f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_83": "an id of 13 hex characters, not 12: as random, and "
    "unique by the primary key (the API takes ids up to 64)",
    **{
        f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_{n}": "a key of the INSERT's row renamed: its placeholders "
        "are made from the same keys, and the columns named in COLUMNS' order"
        for n in (*range(85, 103), *range(105, 109), *range(110, 118))
    },
    f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_104": "the contact stored with its empty fields as null: "
    "Requester reads them back as the same contact",
    f"{_BOOKINGS}xǁBookingsǁcreate__mutmut_148": "`or 'XXXX'` for `or ''`: differs only when a "
    "booking without a key draws a random 48-bit id already taken and another's key is 'XXXX'",
    f"{_BOOKINGS}xǁBookingsǁtrail__mutmut_7": 'SQL made lower case; its one quoted name, "by", already is',
    f"{_SPOOL}run__mutmut_2": "when lines nobody waits for are committed (20 ms, not 250 ms): only fsyncs a "
    "second, which no test times (no wall-clock assertions)",
    f"{_BUFFER}__init____mutmut_14": "isolation_level dropped: each change is in an explicit "
    "BEGIN IMMEDIATE, so Python's implicit BEGIN never fires",
    **{
        f"{_BUFFER}__init____mutmut_{n}": "sqlite3's lock timeout (0.5 s): only how long a second agent "
        "waits before it is refused"
        for n in (16, 18)
    },
    f"{_BUFFER}__init____mutmut_28": "the synchronous pragma's value in lower case: "
    "pragma values are case-blind",
    f"{_BUFFER}append__mutmut_18": "`>=` for `>`: at an excess of exactly 0 the loop "
    "stops before dropping any",
    f"{_BUFFER}append__mutmut_63": "`row or 1`: an INSERT's lastrowid is never 0 or None",
    **{f"{_BUFFER}append__mutmut_{n}": "only whether 'buffer is full' is logged once" for n in (78, 79)},
    f"{_BUFFER}dead_letter__mutmut_20": "'UTF-8' for 'utf-8': codec names are case-blind",
    **{
        f"{_STORE}claim_{c}__mutmut_{n}": "SQL text in another case (ON CONFLICT, AND), nothing quoted in it"
        for c, n in (("first", 16), ("first", 17), ("escalation", 16), ("escalation", 17), ("repeat", 13))
    },
    **{
        f"linli.edge.writer.xǁBatchWriterǁ_settled__mutmut_{n}": "`_disk_refused` only chooses the log "
        "lines (an error once, an info line when the disk takes changes again)"
        for n in (8, 9, 10, 13, 14)
    },
    **{
        f"{_WRITER}__init____mutmut_{n}": "a default the agent never uses: agent.py passes batch_size, "
        "flush_interval and the backoff from [writer] (and Backoff's own defaults are 0.5 and 30)"
        for n in (1, 2, 14, 15, 17)
    },
    **{
        f"{_WRITER}{f}__mutmut_{n}": "None for False: the flag is only ever tested for truth"
        for f, n in (("__init__", 18), ("__init__", 20), ("_succeeded", 2))
    },
    **{
        f"{_WRITER}__init____mutmut_{n}": "the first retry delay: every path that returns False sets "
        "it before run or drain reads it"
        for n in (22, 23)
    },
    f"{_WRITER}__init____mutmut_21": "`_disk_refused` True at start: only an info line once",
    **{
        f"{_WRITER}_succeeded__mutmut_{n}": "the old backlog end dropped: a chunk queued since has a larger "
        "id (chunk ids are AUTOINCREMENT, never given again)"
        for n in (8, 11)
    },
    f"{_WRITER}_succeeded__mutmut_10": "the written chunk's id dropped: it differs only when that chunk "
    "was the newest, and then only in `backlog_written`, a log line's figure",
    f"{_WRITER}_succeeded__mutmut_12": "`or 1` for `or 0` in a max with chunk ids, which start at 1",
    **{
        f"{_WRITER}_next_chunks__mutmut_{n}": "the past read without its end: a batch of the past may take "
        "present chunks along once less than a batch of it is left; the same lines in the same order"
        for n in (6, 9)
    },
    f"{_WRITER}_failed__mutmut_29": "the error passed on only to a log line",
    **{
        f"{_WRITER}_write_part__mutmut_{n}": "`last_write_s` of a part write: read by nothing in linli "
        "(no metric, no view)"
        for n in (27, 31)
    },
    f"{_WRITER}drain__mutmut_4": "`<=` for `<`: differs only when two monotonic readings are equal",
    "linli.cloud.notifier.records.xǁRecordsǁsilences__mutmut_1": "the listing's default lower bound 0.0 made "
    "1.0: only a silence that ended in the first second of 1970 is left out",
    f"{_STORE}open_alert__mutmut_20": "the refresh's one statement never taken as done: the transaction "
    "after it makes the same change to the open episode and answers 'open' too",
    f"{_STORE}claim_group__mutmut_2": "the group's own lock dropped: its upsert takes the group row's lock, "
    "and a second claimer's conflict path checks `last_s <= :ready` on the row the first committed",
    f"{_STORE}close_alert__mutmut_75": "ON CONFLICT DO NOTHING in lower case: keywords",
    f"{_STORE}orphans__mutmut_14": "an unquoted table name: any case is the same name",
    f"{_STORE}orphans__mutmut_16": "unquoted column names: any case is the same name",
    "linli.cloud.waste.outbox.xǁOutboxǁput__mutmut_12": "the exception left out of a rate-limited log line "
    "(logging reports the bad format itself)",
}

STATUS = {1: "killed", 3: "killed", 37: "killed", 0: "survived", 33: "no tests", 5: "no tests", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout"}  # fmt: skip
# A call that only logs: `log.error(`, or the rate-limited `self._ratelog.log(` (linli.catalog.ratelog).
LOG_CALL = re.compile(r"^(self\.)?(log|_ratelog)\.(debug|info|warning|error|exception|log)\(")
SQL = re.compile(r"\b(PRAGMA|SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|VALUES|RETURNING|WHERE|ORDER BY)\b")


def fail(message: str) -> None:
    print(f"mutation: {message}", file=sys.stderr)
    raise SystemExit(2)


def chosen(names: list[str], changed: str | None) -> list[str]:
    """The modules to mutate: named (short name or path), changed since a ref, or all."""
    by_path = {m.path: name for name, m in MODULES.items()}
    if changed is not None:
        diff = subprocess.run(
            ["git", "diff", "--name-only", changed, "--"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if diff.returncode != 0:
            fail(f"cannot diff against {changed!r}: {diff.stderr.strip()}")
        return [by_path[p] for p in diff.stdout.split() if p in by_path]
    out = []
    for name in names or list(MODULES):
        key = by_path.get(name.removeprefix("./"), name)
        if key not in MODULES:
            fail(f"no guarded module {name!r}: name one of {', '.join(MODULES)} (or its path)")
        out.append(key)
    return out


def stage() -> None:
    """A copy of the repository's files."""
    shutil.rmtree(STAGE, ignore_errors=True)
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (STAGE / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, STAGE / name)


def configure(modules: list[str]) -> None:
    """mutmut's settings, appended to the stage's pyproject.toml."""
    only = [MODULES[m].path for m in modules]
    tests = sorted({t for m in modules for t in MODULES[m].tests})
    top = sorted({p.name for p in STAGE.iterdir()} - {"src", "tests", "pyproject.toml"})
    settings = {
        "source_paths": ["src"],
        "only_mutate": only,
        "also_copy": top,
        "do_not_mutate_patterns": NOISE,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "pytest_add_cli_args_test_selection": tests,
    }
    lines = ["", "[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    with (STAGE / "pyproject.toml").open("a") as f:
        f.write("\n".join(lines) + "\n")


def mutmut(*args: str, **env: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(STAGE / "mutants" / "src"), **env)
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=STAGE, env=env, check=False).returncode


def run(globs: list[str], max_children: int) -> int:
    """`mutmut run` with one PostgreSQL cluster made for all its mutants (tests/conftest.py
    copies it instead of running initdb each time); what its tests leave running is stopped
    (`mutation_leftovers`), during the run and at its end, however it ends."""
    from linli.demo.servers import start_postgresql

    token = uuid.uuid4().hex
    template = Path(tempfile.mkdtemp(prefix="linli-pg-mutation-"))
    try:
        with leftovers.stopped_after(token, STAGE):
            start_postgresql(template / "pg").stop()
            return mutmut(
                "run", "--max-children", str(max_children), *globs,
                LINLI_TEST_PG_CLUSTER=str(template / "pg" / "cluster"), **{leftovers.RUN_VAR: token},
            )  # fmt: skip
    finally:
        shutil.rmtree(template, ignore_errors=True)


def sql_case_only(diff: str) -> bool:
    """Whether a mutant only changes the case of SQL text with nothing quoted in it and its bind
    parameters (`:name`) unchanged: keywords and unquoted names are the same in either case to
    PostgreSQL and SQLite."""
    changed = [line[1:] for line in diff.splitlines()[2:] if line[:1] in "+-"]
    if len(changed) != 2:
        return False
    before, after = (re.findall(r'"([^"]*)"', line) for line in changed)
    pairs = [(a, b) for a, b in zip(before, after, strict=False) if a != b]
    return (
        len(before) == len(after)
        and bool(pairs)
        and all(
            a.lower() == b.lower()
            and SQL.search(a.upper()) is not None
            and re.findall(r":\w+", a) == re.findall(r":\w+", b)
            and "'" not in a.replace("''", "")
            for a, b in pairs
        )
    )


def log_only(diff: str, source: list[str]) -> bool:
    """Whether a mutant changes one line of a call that only logs. mutmut's
    `do_not_mutate_patterns` skip a call's first line, not the lines of its arguments below, and
    `_ratelog.log(` is not in NOISE (its lines are many): what is logged changes nothing a
    caller sees. Each place the changed line occurs must be such a call, or inside one."""
    removed = [line[1:] for line in diff.splitlines()[2:] if line[:1] == "-"]
    if len(removed) != 1:
        return False
    hits = [i for i, line in enumerate(source) if line.strip() == removed[0].strip()]
    for i in hits:
        if LOG_CALL.match(source[i].strip()):
            continue
        depth = 0
        for line in reversed(source[:i]):
            depth += line.count(")") - line.count("(")
            if depth < 0:  # the line that opens the call the changed line is in
                if not LOG_CALL.match(line.strip()):
                    return False
                break
        else:
            return False
    return bool(hits)


def report(modules: list[str]) -> int:
    """Each module's score, and every survivor not reviewed with the change it makes (all the
    diffs in `.mutation/survivors.diff`)."""
    os.chdir(STAGE)  # mutmut reads its settings and mutants from there
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    worst, left = 1.0, 0
    with (STAGE / "survivors.diff").open("w") as out:
        for name in modules:
            module = MODULES[name]
            meta = STAGE / "mutants" / f"{module.path}.meta"
            codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
            codes = {k: c for k, c in codes.items() if any(fnmatch.fnmatch(k, g) for g in module.globs())}
            codes = {k: c for k, c in codes.items() if c is not None}  # not checked: left out by --only
            status = Counter(STATUS.get(c, "other") for c in codes.values())
            # A timed-out mutant is detected: not a survivor, nor counted again as equivalent.
            survivors = sorted(k for k, c in codes.items() if STATUS.get(c) not in ("killed", "timeout"))
            diffs = {k: get_diff_for_mutant(k, path=module.path) for k in survivors}
            source = (STAGE / module.path).read_text().splitlines()
            equivalent = {
                k for k in survivors if k in REVIEWED or sql_case_only(diffs[k]) or log_only(diffs[k], source)
            }
            detected = status["killed"] + status["timeout"]  # a mutant that hangs the tests is caught
            score = (detected + len(equivalent)) / len(codes) if codes else 1.0
            worst = min(worst, score)
            print(
                f"{name:9} {module.path}: {status['killed']}/{len(codes)} killed, "
                f"{status['survived']} survived, {status['no tests']} reached by no test, "
                f"{status['timeout']} timed out, {len(equivalent)} equivalent: {score:.1%}"
            )
            for k in survivors:
                out.write(f"# {k}{' (equivalent)' if k in equivalent else ''}\n{diffs[k]}\n\n")
                if k not in equivalent:
                    left += 1
                    changed = [line[1:].strip() for line in diffs[k].splitlines()[2:] if line[:1] in "+-"]
                    print(f"  {k} [{STATUS.get(codes[k], codes[k])}]: {' => '.join(changed)[:240]}")
    if left:
        print(f"\n{left} survivors not reviewed; every diff: .mutation/survivors.diff")
    return 0 if worst >= BAR and not left else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/mutation",
        description="Mutation testing (mutmut) of the modules that carry the guarantees; "
        "prints the survivors.",
        epilog=f"Modules: {', '.join(f'{n} ({m.path})' for n, m in MODULES.items())}. "
        "Exit 0: every mutant killed or reviewed; 1: survivors to review; 2: usage error; 3: mutmut failed.",
    )
    parser.add_argument("modules", nargs="*", help="short names or paths (default: all)")
    parser.add_argument("--changed", metavar="REF", help="only the guarded modules changed since REF")
    parser.add_argument(
        "--only", metavar="MUTANT", action="append", default=[],
        help="only these mutants (mutmut's names, globs; again for more): survivors checked after a new test",
    )  # fmt: skip
    parser.add_argument(
        "--max-children", type=int, default=1, choices=(1, 2), help="mutants tested at once (default 1)"
    )
    args = parser.parse_args()
    if args.changed is not None and args.modules:
        fail("name modules or give --changed, not both")
    modules = chosen(args.modules, args.changed)
    if not modules:
        print(f"mutation: no guarded module changed since {args.changed}; nothing to mutate")
        return 0
    if importlib.util.find_spec("mutmut") is None:
        fail("mutmut is not installed: .venv/bin/pip install -e '.[dev]' -c constraints.txt")
    globs = [g for m in modules for g in MODULES[m].globs()]
    if args.only:
        # By the module's prefix: `...xǁStoreǁclaim_*` names mutants too, though no module glob
        # (`...*__mutmut_*`) matches that text; such a glob was once dropped without a word.
        prefixes = tuple(MODULES[m].name + "." for m in modules)
        ignored = [o for o in args.only if not o.startswith(prefixes)]
        if ignored:
            fail(f"--only names no mutant of the modules chosen: {', '.join(ignored)}")
        globs = args.only
    # One run at a time: the stage is made anew, under the feet of any run still using it.
    lock = (ROOT / ".mutation.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail("another run of scripts/mutation is using .mutation/: wait for it to end")
    print(f"mutation: {', '.join(modules)} in {STAGE.relative_to(ROOT)}/")
    stage()
    configure(modules)
    # Made before mutmut starts: a PYTHONPATH folder missing at start is never looked in again.
    (STAGE / "mutants" / "src").mkdir(parents=True)
    try:
        code = run(globs, args.max_children)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM or SIGHUP (mutation_leftovers)
        print(f"mutation: stopped ({exc or 'Ctrl-C'}); what its tests started is stopped", file=sys.stderr)
        return 130
    if code != 0:
        print(f"mutation: mutmut run failed (exit {code})", file=sys.stderr)
        return 3
    return report(modules)


if __name__ == "__main__":
    raise SystemExit(main())
