#!/usr/bin/env python3
"""Compare two reference_runs.sh folders: requests.csv byte for byte, summary.json byte for byte
after dropping the given added keys from every policy entry (default: "policy").

    python3 scripts/compare_runs.py OLD NEW [--ignore policy]      # exit 1 on any difference
"""
import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--ignore", action="append", default=None, help="per-policy key added by NEW (repeatable)")
    a = ap.parse_args()
    ignore = a.ignore if a.ignore is not None else ["policy"]
    bad = 0
    for run in sorted(p for p in Path(a.old).iterdir() if p.is_dir()):
        new = Path(a.new) / run.name
        same_req = (run / "requests.csv").read_bytes() == (new / "requests.csv").read_bytes()
        data = json.loads((new / "summary.json").read_text())
        for m in data["policies"].values():
            for key in ignore:
                m.pop(key, None)
        same_sum = json.dumps(data, indent=2) + "\n" == (run / "summary.json").read_text()
        bad += not (same_req and same_sum)
        print(f"{run.name:<10} requests.csv {'same' if same_req else 'DIFFERS'}   summary.json {'same' if same_sum else 'DIFFERS'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
