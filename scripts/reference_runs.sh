#!/usr/bin/env bash
# Seven fixed-seed simulations (summary.json + requests.csv each), for "no behaviour change" checks
# across a restructuring: run it on both commits, then compare with scripts/compare_runs.py.
#   bash scripts/reference_runs.sh OUTDIR
set -euo pipefail
out=$1; mkdir -p "$out"
repo=$(cd "$(dirname "$0")/.." && pwd)
run() { name=$1; shift; rm -rf "$out/$name"
  PYTHONPATH=$repo python3 -m tetris_cli simulate --quiet --out "$out/$name" "$@" >/dev/null || echo "FAILED: $name"; }
run default
run poisson --set workload.arrival='"poisson"' --set workload.rate=20 --set workload.num_requests=300
run goodput --set policy.budget='"goodput"' --set cost.model='"knee"' --set cost.per_token_s=0.0005 --set cost.knee_tokens=64 --set workload.num_requests=200
run threshold --set policy.name='"threshold"' --set workload.num_requests=200 --set acceptance.model='"beta"'
run oracle --set policy.name='"oracle"' --set workload.num_requests=200 --set acceptance.model='"mixture"'
run replicas --set server.replicas=3 --set workload.arrival='"poisson"' --set workload.rate=50 --set workload.num_requests=300
run dsd --set policy.name='"dsd"' --set workload.num_requests=200 --set cost.model='"linear"' --set cost.per_token_s=0.0002
echo "wrote $out"
