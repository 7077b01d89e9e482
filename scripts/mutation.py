"""Mutation testing of the core modules: does each module's fast test suite notice a change to
the code? mutmut (a dev extra) rewrites every operator, constant, comparison and return of the
module one at a time and runs the tests that reach the mutated function; a mutant is killed when a
test fails (or hangs past mutmut's timeout). The score is (killed + timed out) / mutants. Target: 80% per
module (docs/testing.md).

    .venv/bin/python scripts/mutation.py                      # every module below → bench/results/mutation.json
    .venv/bin/python scripts/mutation.py --module labelmodel  # one (the others' earlier results are kept)
    .venv/bin/python scripts/mutation.py --survivors 20       # also list up to 20 surviving mutants per module

Each module is mutated in a copy of src/ and tests/ under a temporary folder, never in this checkout
(other processes may be running its code). It is long (minutes per module on 2 cores): it runs at
nice 5, one module at a time.

While writing tests against the survivors, a kept folder saves the re-run of everything else:

    .venv/bin/python scripts/mutation.py --module metrics --workdir /tmp/mut --jobs 2   # full run, folder kept
    .venv/bin/python scripts/mutation.py --module metrics --workdir /tmp/mut --rerun-survivors

The second copies src/ and tests/ in again and tests, with the tests as they are now, only the
mutants that survived, timed out or no test reached, and those of a function whose code changed; every
other verdict stands. That holds while tests are only added: a test changed or removed can let a
killed mutant live, so the number to report comes from a full run. The score is always over every
mutant of the module.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "mutation.json"
# module name: (the file mutated, the fast unit tests that cover it)
MODULES = {
    "labelmodel": ("src/taskling/curation/labelmodel.py", ["tests/curation/test_labelmodel.py"]),
    "filters": ("src/taskling/curation/filters.py", ["tests/curation/test_curation.py"]),
    "allocate": ("src/taskling/teacher/allocate.py", ["tests/teacher/test_allocate.py",
                                                     "tests/teacher/test_generate_parts.py"]),
    "metrics": ("src/taskling/tasks/metrics.py", ["tests/tasks/test_metrics.py"]),
    "config": ("src/taskling/core/config.py", ["tests/core/test_config.py"]),
}



def mutmut_section(path: str, tests: list[str], test_timeout: int = 300, timeout_multiplier: float = 15.0) -> str:
    listed = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    return ("\n[tool.mutmut]\n"
            f"paths_to_mutate = {listed([path])}\n"
            f"tests_dir = {listed(tests)}\n"
            'also_copy = ["tests", "src/taskling"]\n'
            # mutmut stops a mutant's tests at (their measured time + 1 s) x this x 2 CPU seconds, or half that in
            # wall time: on a starved machine a mutant that changes nothing can pass the wall bound
            f"timeout_multiplier = {timeout_multiplier}\n"
            # Tests that start subprocesses or servers have no place here: only the unit files above run.
            # pytest-timeout is wall time: on a loaded machine a starved test run needs more (mutmut's own limit is
            # CPU time, which load does not stretch)
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "-o", "addopts=", '
            f'"--timeout={test_timeout}",\n'
            '                       "--timeout-method=thread"]\n')


def exit_codes(work: Path) -> dict[str, int | None]:
    """Each mutant's test run's exit code as mutmut recorded it in `work` (None: not run yet)."""
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


def run_module(name: str, jobs: int, survivors: int, workdir: Path | None = None, rerun: bool = False,
               test_timeout: int = 300, timeout_multiplier: float = 15.0) -> dict:
    path, tests = MODULES[name]
    if workdir is not None:
        work = workdir / name
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix=f"taskling-mutation-{name}-"))
    from mutmut.stats import status_by_exit_code  # what each mutant's test run's exit code means

    try:
        for part in ("src", "tests"):
            shutil.rmtree(work / part, ignore_errors=True)
            shutil.copytree(ROOT / part, work / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        text = (ROOT / "pyproject.toml").read_text()
        text = re.sub(r"\n\[tool\.mutmut\][^\[]*", "\n", text)
        (work / "pyproject.toml").write_text(text + mutmut_section(path, tests, test_timeout, timeout_multiplier))
        # mutmut forks a test process per mutant: torch's and OpenMP's thread pools do not survive a fork (a
        # child can wait forever on a lock no thread holds), so the tests run single-threaded here; and a test
        # that still hangs is stopped (pytest-timeout), which counts as noticed.
        env = {**os.environ, "PYTHONPATH": str(work / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        mutmut = str(Path(sys.executable).parent / "mutmut")
        names: list[str] = []
        if rerun:  # only the mutants no test noticed last time, or that timed out (mutmut re-runs the ones named)
            names = sorted(k for k, c in exit_codes(work).items()
                           if c is not None and status_by_exit_code[c] in ("survived", "no tests", "timeout"))
        t0 = time.monotonic()
        proc = subprocess.run(["nice", "-n", "5", mutmut, "run", "--max-children", str(jobs), *names], cwd=work,
                              env=env, capture_output=True, text=True)
        codes = exit_codes(work)
        pending = sorted(k for k, c in codes.items() if c is None)
        if names and pending and proc.returncode == 0:  # functions whose code changed since: their mutants anew
            proc = subprocess.run(["nice", "-n", "5", mutmut, "run", "--max-children", str(jobs), *pending],
                                  cwd=work, env=env, capture_output=True, text=True)
            codes = exit_codes(work)
        seconds = round(time.monotonic() - t0, 1)
        if proc.returncode != 0 or not codes or None in codes.values():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise SystemExit(f"mutation.py: mutmut failed on {path} (exit {proc.returncode}):\n{tail}")
        status = {k: status_by_exit_code[c] for k, c in codes.items()}
        counts = collections.Counter(status.values())
        scored = sum(counts.values()) - counts.get("skipped", 0)
        row = {"module": path, "tests": tests, "mutants": scored, "killed": counts.get("killed", 0),
               "survived": counts.get("survived", 0), "timeout": counts.get("timeout", 0),
               "no_tests": counts.get("no tests", 0), "other": {k: v for k, v in counts.items() if k not in
                                                                ("killed", "survived", "timeout", "no tests")},
               # a mutant that makes the tests hang was noticed too (Stryker's convention): killed + timeout
               "score": round((counts.get("killed", 0) + counts.get("timeout", 0)) / scored, 4) if scored else None,
               "seconds": seconds, "date": time.strftime("%Y-%m-%d", time.gmtime()),
               **({"rerun_survivors": len(names)} if rerun else {})}
        if survivors:
            row["surviving"] = sorted(k for k, st in status.items() if st in ("survived", "no tests"))[:survivors]
        return row
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES), help="only these (default: all)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1: 2 cores are shared)")
    ap.add_argument("--survivors", type=int, default=0, help="list up to N surviving mutants per module")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--workdir", type=Path, help="keep each module's mutated copy here (NAME/ below it) for --rerun-survivors")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="in --workdir's copy, test again only the mutants that survived or timed out last time")
    ap.add_argument("--test-timeout", type=int, default=300,
                    help="wall seconds one test may take before it counts as hung (default 300; more on a loaded machine)")
    ap.add_argument("--timeout-multiplier", type=float, default=15.0,
                    help="mutmut's timeout_multiplier (default 15, mutmut's own; more on a loaded machine)")
    args = ap.parse_args(argv)
    if args.rerun_survivors and args.workdir is None:
        ap.error("--rerun-survivors needs --workdir (the folder of the earlier run)")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("modules", {})
    for name in args.module or list(MODULES):
        row = run_module(name, args.jobs, args.survivors, args.workdir, args.rerun_survivors,
                         args.test_timeout, args.timeout_multiplier)
        results["modules"][name] = row
        results["command"] = "python scripts/mutation.py"
        results["target"] = 0.8
        results["tool"] = "mutmut " + subprocess.run([str(Path(sys.executable).parent / "mutmut"), "--version"],
                                                     capture_output=True, text=True).stdout.split()[-1]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name:12s} {row['killed'] + row['timeout']:5d} of {row['mutants']:5d} killed  score {row['score']:.1%}  "
              f"({row['survived']} survived, {row['timeout']} timed out, {row['no_tests']} reached by no test; "
              f"{row['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
