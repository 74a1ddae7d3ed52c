#!/usr/bin/env bash
# GPU check of the engine (one H100; under 8 minutes, plus up to 8 for the vLLM part): gpu-marked tests, a short profile,
# a short engine run per policy on CUDA (bf16), and the speed benchmark. Logs go to $OUT
# when it is set (else ./gpu_check_out). Each part has its own timeout; the script goes on
# after a failure and exits non-zero if any part failed.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check_out}"
mkdir -p "$OUT"
fail=0
part() {  # part NAME SECONDS CMD...
  local name=$1 secs=$2
  shift 2
  echo "== $name ($(date +%T))" | tee -a "$OUT/summary.log"
  if timeout "$secs" "$@" >"$OUT/$name.log" 2>&1; then
    echo "   ok" | tee -a "$OUT/summary.log"
  else
    echo "   FAILED (rc $?)" | tee -a "$OUT/summary.log"
    fail=1
  fi
  tail -n 25 "$OUT/$name.log"
}
part env 60 python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"
part pytest_gpu 150 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_engine_gpu.py
part profile 90 tetris profile --set engine.device='"cuda"' --set engine.clock='"wall"' --set engine.threads=0 --batch 1,8,32,64 --tokens 1,2,4,8 \
  --context 128,512 --repeats 5 --quiet --out "$OUT/profile_cuda.csv"
for pol in none fixed dsd tetris threshold; do
  part "engine_$pol" 45 tetris engine --set engine.device='"cuda"' --set engine.clock='"wall"' \
    --set engine.threads=0 --set workload.num_requests=64 \
    --set server.max_batch=32 --set workload.output_len.value=128 --policy "$pol" --json --quiet \
    --out "$OUT/engine-$pol"
done
part bench 150 python3 benchmarks/bench_engine.py --device cuda --batches 8,32
# vLLM on CUDA (only where a vLLM venv exists: VLLM_PY, default .venv-vllm/bin/python from
# `bash scripts/setup_vllm.sh`): plain vs fixed k=2/4 vs TETRIS-in-vLLM on the same requests
# (benchmarks/configs/vllm_b8_tiny.toml, wall clock), then the simulator's prediction of each
# (tetris validate through vLLM, offline). vLLM 0.32's own adaptive verification is not in this
# comparison: it supports method = "dspark" only, not a draft model (config/speculative.py).
VLLM_PY="${VLLM_PY:-.venv-vllm/bin/python}"
if [ -x "$VLLM_PY" ]; then
  part vllm_engine 240 "$VLLM_PY" tetris_cli.py engine --config benchmarks/configs/vllm_b8_tiny.toml \
    --set engine.device='"cuda"' --set engine.clock='"wall"' --set engine.threads=0 --quiet --out "$OUT/vllm-engine"
  part vllm_validate 240 "$VLLM_PY" tetris_cli.py validate --set engine.backend='"vllm"' --set engine.device='"cuda"' \
    --set engine.threads=0 --policies none,fixed,tetris --loads offline --clock wall --repeats 1 --out "$OUT/vllm-validate"
else
  echo "== vllm: skipped ($VLLM_PY not found; run bash scripts/setup_vllm.sh)" | tee -a "$OUT/summary.log"
fi
echo "done: $([ $fail = 0 ] && echo all parts ok || echo some parts FAILED); logs in $OUT" | tee -a "$OUT/summary.log"
exit $fail
