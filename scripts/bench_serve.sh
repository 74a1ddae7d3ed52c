#!/usr/bin/env bash
# Plain vs TETRIS behind `tetris serve`, driven by `tetris bench-serve` (Poisson arrivals), A B A B.
#
#   scripts/bench_serve.sh OUT_DIR CONFIG.toml "NONE_RATE1 NONE_RATE2" "TETRIS_RATE1 TETRIS_RATE2" [ROUNDS]
#
# Starts one server per policy (policy none on port 8611, tetris on 8612; the config's [engine] /
# [server] / [policy] otherwise), waits for /health, then per round and rate index runs the client
# against none, then tetris (interleaved, so machine drift hits both alike). Writes
# OUT_DIR/{none,tetris}-r{1,2}-{round}.json (vllm bench serve's result format). Servers are stopped
# with SIGTERM at the end (also on error).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; cfg=$2; read -r -a none_rates <<<"$3"; read -r -a tetris_rates <<<"$4"; rounds=${5:-2}
mkdir -p "$out"
export PYTHONPATH=$PWD
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
python3 tetris_cli.py serve --config "$cfg" --set 'policy.name="none"' --port 8611 2>"$out/server-none.log" & pids+=($!)
python3 tetris_cli.py serve --config "$cfg" --set 'policy.name="tetris"' --port 8612 2>"$out/server-tetris.log" & pids+=($!)
for port in 8611 8612; do
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
done
for round in $(seq "$rounds"); do
  for i in 0 1; do
    for pol in none tetris; do
      if [ "$pol" = none ]; then port=8611; rate=${none_rates[$i]}; else port=8612; rate=${tetris_rates[$i]}; fi
      python3 tetris_cli.py bench-serve --config "$cfg" --set 'workload.arrival="poisson"' --set "workload.rate=$rate" \
        --base-url "http://127.0.0.1:$port" --label "$pol@$rate" --out "$out/$pol-r$((i + 1))-$round.json" \
        | sed "s/^/$pol rate $rate round $round: /"
    done
  done
done
