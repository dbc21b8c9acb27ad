#!/usr/bin/env python3
"""mutants/RESULTS.md's table from the last `bash mutants/run.sh`.

Reads $CARGO_TARGET_DIR/mutants/out/*/mutants.out/outcomes.json (or the
directory given as the first argument) and prints, per group and file, how
many mutants the tests caught, missed, timed out on (a timeout counts as
caught: the mutant was detected, by a hang) and could not build (unviable),
then every missed mutant by name.

    python3 mutants/summary.py > mutants/RESULTS.md.new
"""
import json
import os
import pathlib
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else (
    pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "mutants" / "out")
KINDS = {"CaughtMutant": "caught", "MissedMutant": "missed", "Timeout": "timeout", "Unviable": "unviable"}

rows, missed, runs = [], [], []
for outcomes in sorted(OUT.glob("*/mutants.out/outcomes.json")):
    group = outcomes.parent.parent.name
    data = json.loads(outcomes.read_text())
    runs.append(f"{group}: {data['start_time'][:16]} to {(data['end_time'] or 'still running')[:16]}, "
                f"cargo-mutants {data['cargo_mutants_version']}")
    per_file = defaultdict(lambda: defaultdict(int))
    for o in data["outcomes"]:
        scenario = o["scenario"]
        if not isinstance(scenario, dict) or "Mutant" not in scenario:
            continue  # the baseline
        mutant = scenario["Mutant"]
        kind = KINDS.get(o["summary"], o["summary"])
        per_file[mutant["file"]][kind] += 1
        if kind == "missed":
            missed.append((group, mutant["name"]))
    for file, n in sorted(per_file.items()):
        rows.append((group, file, n["caught"], n["missed"], n["timeout"], n["unviable"]))

print("| group | file | caught | missed | timeout | unviable |")
print("|---|---|---:|---:|---:|---:|")
for group, file, *n in rows:
    print(f"| {group} | `{file}` | " + " | ".join(str(x) for x in n) + " |")
totals = [sum(r[i] for r in rows) for i in range(2, 6)]
print("| **all** | | " + " | ".join(f"**{t}**" for t in totals) + " |")
print()
print("Runs (UTC):")
print()
for run in runs:
    print(f"- {run}")
print()
if missed:
    print("Missed (each explained in survivors.md):")
    print()
    for group, name in missed:
        print(f"- {group}: `{name}`")
else:
    print("Missed: none.")
