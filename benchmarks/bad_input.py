"""The bad-input measure: every bad value of the table, per package, by outcome.

Runs each bad call of ``tests/bad_input_table.py`` (one bad argument in an otherwise valid call) and
counts, per package: a clear error (``ValueError``/``TypeError``/``MemoryError`` naming the parameter),
an unclear error (another exception, or a message that does not name the parameter), silent (the call
returned), hang (no answer within the time limit). The goal is >= 95 % clear, no silent, no hang.
Also counts the public functions in the table against all public functions of each package. Run:

    .venv/bin/python benchmarks/bad_input.py              # the table
    .venv/bin/python benchmarks/bad_input.py --list       # and every call that is not clear
    .venv/bin/python benchmarks/bad_input.py --package inverse --seconds 5

It runs on the selected device (``MBOOK_DEVICE``); a measure, not a test (``tests/test_bad_input.py``
is the test).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import importlib
import pathlib
import pkgutil
import sys
import warnings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))

import mbook  # noqa: E402
from bad_input_table import TABLE, public_functions, run_bad_call  # noqa: E402

OUTCOMES = ("clear", "unclear", "silent", "hang")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default=None, help="one package, e.g. core or inverse")
    parser.add_argument("--seconds", type=int, default=10, help="time limit of one bad call")
    parser.add_argument("--list", action="store_true", help="print every call that is not clear")
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    totals = collections.Counter()
    for info in pkgutil.walk_packages(mbook.__path__, "mbook."):
        package = info.name.split(".")[1]
        for name in public_functions(importlib.import_module(info.name)):
            totals[package] += 1

    counts = collections.defaultdict(collections.Counter)
    covered = collections.Counter()
    not_clear = []
    for key in sorted(TABLE):
        package = key.split(".")[0]
        if args.package and package != args.package:
            continue
        entry = TABLE[key]
        covered[package] += 1
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # figures and widgets print their reprs
                entry.call()
        except Exception as error:  # noqa: BLE001
            not_clear.append(f"valid call fails: {key}: {type(error).__name__}: {error}")
            continue
        for parameter in entry.parameters:
            for label, make in entry.bad_values(parameter):
                with contextlib.redirect_stdout(io.StringIO()):
                    outcome, detail = run_bad_call(entry, parameter, make, seconds=args.seconds)
                counts[package][outcome] += 1
                if outcome != "clear":
                    not_clear.append(f"{outcome:8s} {key}({parameter}={label}): {detail[:160]}")

    print(f"{'package':14s} {'functions':>13s} {'bad calls':>9s} " + " ".join(f"{o:>8s}" for o in OUTCOMES)
          + f" {'% clear':>8s}")
    packages = [args.package] if args.package else sorted(totals)
    grand = collections.Counter()
    for package in packages:
        c = counts[package]
        n = sum(c.values())
        grand.update(c)
        share = f"{100 * c['clear'] / n:7.1f}%" if n else "       -"
        print(f"{package:14s} {covered[package]:>5d} of {totals[package]:<5d} {n:>9d} "
              + " ".join(f"{c[o]:>8d}" for o in OUTCOMES) + f" {share}")
    n = sum(grand.values())
    print(f"{'all':14s} {sum(covered.values()):>5d} of {sum(totals[p] for p in packages):<5d} {n:>9d} "
          + " ".join(f"{grand[o]:>8d}" for o in OUTCOMES) + (f" {100 * grand['clear'] / n:7.1f}%" if n else ""))
    if args.list:
        print("\n".join(not_clear))


if __name__ == "__main__":
    main()
