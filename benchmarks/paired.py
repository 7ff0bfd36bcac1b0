"""Times a benchmark script of this tree against the same script of an earlier commit, interleaved.

The earlier commit is exported (``git archive``) into a temporary folder; the script of each tree
then runs alternately (base, head, base, head, …), each run in a fresh process that imports its own
tree's ``skelgraph``, so both versions meet the same phases of a machine whose speed drifts. Every
timing (a number under a key that names milliseconds) of each run's results JSON is collected; the
table gives each timing's median per tree and the median of the per-round ratios head / base
(< 1: this tree is faster).

Usage: ``python benchmarks/paired.py --base a7bd7a0 --rounds 3 streaming.py -- --pose-frames 0``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from _common import ROOT, export_commit, format_table, machine, write_json

RESULTS = Path(__file__).resolve().parent / "results"
#: the fields that name a row of a results list (the others are its measurements)
ROW_NAMES = ("model", "layer", "stage", "precision", "case")


def timings(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Yields ``(path, value)`` for every number under a key that names milliseconds.

    A row of a list of results is named by its identifying fields (:data:`ROW_NAMES`, e.g.
    ``model/precision/case``), so the same row is found in both trees' results whatever its
    position.
    """
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if "ms" in str(key).split() and not str(key).startswith("reference"):
                    yield name, float(value)
            else:
                yield from timings(value, name)
    elif isinstance(data, list):
        for index, row in enumerate(data):
            if isinstance(row, Mapping):
                names = [str(row[k]) for k in ROW_NAMES if isinstance(row.get(k), str)]
                label = "/".join(names) or index
                yield from timings(row, f"{prefix}[{label}]")


def run_script(tree: Path, script: str, extra: list[str], output: Path) -> dict[str, float]:
    """Runs ``tree/benchmarks/script`` with ``tree`` first on the import path; its timings."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "benchmarks")])}
    command = [sys.executable, str(tree / "benchmarks" / script), *extra, "--output", str(output)]
    subprocess.run(command, check=True, env=env, cwd=tree, stdout=subprocess.DEVNULL)
    return dict(timings(json.loads(output.read_text())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tree, alternated")
    parser.add_argument("script", help="a script in benchmarks/, e.g. streaming.py")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="arguments for the script")
    parser.add_argument("--output", type=Path, help="JSON results file (before the script)")
    args = parser.parse_args(argv)
    if args.extra[:1] == ["--"]:
        args.extra = args.extra[1:]
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive number, got {args.rounds}")
    if not (ROOT / "benchmarks" / args.script).is_file():
        parser.error(f"script: no file benchmarks/{args.script} in {ROOT}")

    base_rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    head_rev = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    runs: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="skelgraph-paired-") as scratch:
        base_tree = Path(scratch) / "base"
        export_commit(base_rev, base_tree)
        trees = {"base": base_tree, "head": ROOT}
        for round_index in range(args.rounds):
            for side in ("base", "head"):
                output = Path(scratch) / f"{side}-{round_index}.json"
                runs[side].append(run_script(trees[side], args.script, args.extra, output))
                print(f"round {round_index + 1}/{args.rounds}: {side} done", flush=True)

    every_run = runs["base"] + runs["head"]
    names = [
        name
        for name in runs["head"][0]
        if all(name in r for r in every_run) and len({r[name] for r in every_run}) > 1
    ]  # timings absent from one tree, and constants such as targets, are not compared
    rows = []
    for name in names:
        base = [r[name] for r in runs["base"]]
        head = [r[name] for r in runs["head"]]
        ratios = [h / b for h, b in zip(head, base, strict=True) if b > 0]
        rows.append(
            {
                "timing": name,
                f"{base_rev} ms": round(statistics.median(base), 3),
                f"{head_rev} ms": round(statistics.median(head), 3),
                "head / base": f"{statistics.median(ratios):.3f}" if ratios else "",
                "per round": " ".join(f"{r:.3f}" for r in ratios),
            }
        )
    columns = ["timing", f"{base_rev} ms", f"{head_rev} ms", "head / base", "per round"]
    print(format_table(rows, columns))
    stem = Path(args.script).stem
    path = write_json(
        args.output or RESULTS / f"paired_{stem}.json",
        {
            "script": args.script,
            "arguments": args.extra,
            "base": base_rev,
            "head": head_rev,
            "rounds": args.rounds,
            "machine": machine(),
            "rows": rows,
            "runs": runs,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
