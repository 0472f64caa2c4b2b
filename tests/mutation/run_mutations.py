"""Mutation check of grokscope/measures, grokscope/analysis and grokscope/store (issue 18, part C).

Copies grokscope/, tests/ and pyproject.toml of the checkout into a temporary directory, applies each mutant of
mutants.py there (one at a time: patch one file of the copy, run its tests with ``pytest -x -q``, restore the file
byte for byte in a ``finally``), and records killed / survived. The checkout itself is never written: other people
run tests from it. At the end the script checks that every file of the copy is back to its original bytes and that
``git diff`` of the three packages in the checkout is what it was at the start.

    python tests/mutation/run_mutations.py                   # every mutant, the default test selections
    python tests/mutation/run_mutations.py --package store   # one package
    python tests/mutation/run_mutations.py --only skip-fsync --only gini-no-sort
    python tests/mutation/run_mutations.py --no-kill-tests   # without tests/test_mutation_kills.py

Not collected by pytest (its name has no test_ prefix). Results: a table on stdout and --json FILE.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

from mutants import KILL_TESTS, MUTANTS, PACKAGE_TESTS, Mutant  # noqa: E402

PACKAGES = ("measures", "analysis", "store")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_diff(paths: list[str]) -> str:
    return subprocess.run(["git", "diff", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def make_copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(ROOT / "grokscope", dest / "grokscope", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def env_for(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutated module's .pyc must never outlive the mutation
    env.pop("CI", None)  # the CI skip check is not what is measured here
    return env


def selection(m: Mutant, kill_tests: bool, copy: Path) -> list[str]:
    args = list(m.tests or PACKAGE_TESTS[m.package])
    if kill_tests and (copy / KILL_TESTS).exists():
        # a "-k" expression of the package selection applies to the kill tests too; they have no 'fault_loop'
        args.insert(0, KILL_TESTS)
    return args


def run_tests(copy: Path, args: list[str], timeout: float) -> tuple[str, float, str]:
    cmd = ["nice", "-n", "19", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env_for(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "killed (timeout)", time.perf_counter() - t0, ""
    dt = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return "survived", dt, out
    if proc.returncode == 1:
        return "killed", dt, out
    return f"killed (pytest exit {proc.returncode})", dt, out


def first_failure(out: str) -> str:
    for line in out.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line[:200]
    return ""


def apply_and_run(copy: Path, m: Mutant, kill_tests: bool, timeout: float) -> dict:
    path = copy / m.file
    original = path.read_bytes()
    text = original.decode()
    if text.count(m.original) != 1:
        return {
            "id": m.id,
            "package": m.package,
            "file": m.file,
            "status": "invalid",
            "detail": f"snippet occurs {text.count(m.original)} times",
        }
    try:
        path.write_bytes(text.replace(m.original, m.replacement).encode())
        status, dt, out = run_tests(copy, selection(m, kill_tests, copy), timeout)
    finally:
        path.write_bytes(original)
    if path.read_bytes() != original:  # pragma: no cover - write_bytes of the same bytes
        raise SystemExit(f"{m.file}: not restored after mutant {m.id}")
    return {
        "id": m.id,
        "package": m.package,
        "file": m.file,
        "what": m.what,
        "status": status,
        "seconds": round(dt, 1),
        "tests": selection(m, kill_tests, copy),
        "detail": first_failure(out),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", choices=PACKAGES, action="append")
    ap.add_argument("--only", action="append", help="mutant id (repeatable)")
    ap.add_argument("--no-kill-tests", action="store_true", help=f"leave {KILL_TESTS} out of every selection")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant run (a hang counts as killed)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    chosen = [
        m for m in MUTANTS if (not args.package or m.package in args.package) and (not args.only or m.id in args.only)
    ]
    if args.only and len(chosen) != len(set(args.only)):
        ap.error(f"unknown mutant id(s): {sorted(set(args.only) - {m.id for m in chosen})}")
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), "duplicate mutant ids"
    package_dirs = [f"grokscope/{p}" for p in PACKAGES]
    diff_before = git_diff(package_dirs)

    tmp = Path(tempfile.mkdtemp(prefix="grokscope-mutation-"))
    results: list[dict] = []
    try:
        copy = tmp / "repo"
        make_copy(copy)
        before = {p: sha(p) for p in (copy / "grokscope").rglob("*.py")}
        where = subprocess.run(
            [sys.executable, "-c", "import grokscope; print(grokscope.__file__)"],
            cwd=copy,
            env=env_for(copy),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(copy)):
            raise SystemExit(f"the tests would import grokscope from {where}, not from the copy")
        # the unmutated baseline of every selection must pass, or a 'killed' means nothing
        for sel in sorted({tuple(selection(m, not args.no_kill_tests, copy)) for m in chosen}):
            status, dt, out = run_tests(copy, list(sel), args.timeout)
            print(f"baseline {' '.join(sel)}: {'ok' if status == 'survived' else 'FAILS'} ({dt:.0f} s)", flush=True)
            if status != "survived":
                print(out[-3000:])
                raise SystemExit("the unmutated tests fail: fix that first")
        for m in chosen:
            r = apply_and_run(copy, m, not args.no_kill_tests, args.timeout)
            results.append(r)
            print(
                f"{r['status']:<26} {m.package:<9} {m.id:<34} {r.get('seconds', 0):>5} s  {r.get('detail', '')}",
                flush=True,
            )
        after = {p: sha(p) for p in (copy / "grokscope").rglob("*.py")}
        if after != before:
            raise SystemExit(
                f"the copy was not restored: {sorted(str(p) for p in before if after.get(p) != before[p])}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\npackage    killed / total   score")
    for pkg in PACKAGES:
        rs = [r for r in results if r["package"] == pkg and r["status"] != "invalid"]
        if rs:
            k = sum(r["status"].startswith("killed") for r in rs)
            print(f"{pkg:<10} {k:>6} / {len(rs):<6} {k / len(rs):6.0%}")
    survivors = [r for r in results if r["status"] == "survived"]
    invalid = [r for r in results if r["status"] == "invalid"]
    for r in survivors:
        print(f"SURVIVED {r['package']}/{r['id']}: {r['what']}")
    for r in invalid:
        print(f"INVALID {r['id']}: {r['detail']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    if git_diff(package_dirs) != diff_before:
        # this script writes only under the temporary copy; someone else changed (or committed) these files meanwhile
        print(
            "NOTE: git diff of grokscope/{measures,analysis,store} in the checkout changed during the run (not by this "
            "script, which writes only to its copy): rerun for results on the new code"
        )
        return 2
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
