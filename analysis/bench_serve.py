"""`vllm bench serve` result JSON and vLLM's Prometheus spec-decode counters: read, write, fit.

    result = read_result("result.json")        # dict, checked (one-line ConfigError naming the bad field)
    counters = read_metrics("metrics.txt")     # {num_drafts, num_draft_tokens, num_accepted_tokens, per_position}
    measured = measured_metrics(result)        # this project's metric names (seconds), for validate_math
    rates = position_rates(result, counters)   # P(drafts 1..j+1 all accepted) per position j (vLLM's definition)
    acc = fit_acceptance(rates)                # [acceptance] table (iid or beta, + per-position decay)
    rows = detailed_requests(result)           # [(arrival_s, prompt_len, output_len)] or None
    data = to_bench_serve_json(summary, requests, stats)   # a simulated run in the same JSON form

Field names as vllm/benchmarks/serve.py writes them (vLLM 0.32): duration (s), completed,
failed, total_input_tokens, total_output_tokens, request_throughput, output_throughput,
total_token_throughput, {mean,median,std,p99}_{ttft,tpot,itl,e2el}_ms, spec_decode_acceptance_rate
(percent), spec_decode_acceptance_length, spec_decode_num_drafts, spec_decode_draft_tokens,
spec_decode_accepted_tokens, spec_decode_per_position_acceptance_rates (accepted at position j
/ drafts: an unconditional rate), num_prompts, request_rate ("inf" or requests/s), burstiness
(gamma shape; 1 = Poisson), max_concurrency (null or an int); with --save-detailed also per
request input_lens, output_lens, ttfts (s), itls (lists, s), latencies (s), start_times
(perf_counter s at send), errors ("" when it succeeded).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from contract.config import ConfigError

REQUIRED = ("duration", "completed", "output_throughput")
LATENCY = {"ttft": "ttft_s", "tpot": "tpot_s", "e2el": "e2e_s"}  # vLLM name -> this project's (+ mean_/p50_/p99_)
COUNTERS = {"num_drafts": "vllm:spec_decode_num_drafts", "num_draft_tokens": "vllm:spec_decode_num_draft_tokens",
            "num_accepted_tokens": "vllm:spec_decode_num_accepted_tokens"}
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
DETAILED = ("input_lens", "output_lens")


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_result(path: str | Path, key: str = "--measured") -> dict:
    """The result JSON (the last object of an --append-result file), with its fields checked."""
    from contract.outpaths import read_text

    text = read_text(Path(path), f"{key} file")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:  # --append-result: one JSON object per line; the last run counts
            data = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{key} {str(path)!r}: not JSON ({err})") from None
    return check_result(data, f"{key} {str(path)!r}")


def check_result(data, where: str = "result") -> dict:
    """`data` if it is a usable bench-serve result, else ConfigError naming `where` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object (a `vllm bench serve` result)")
    for f in REQUIRED:
        if f not in data:
            raise ConfigError(f"{where}: missing field {f!r} (a `vllm bench serve --save-result` file has it)")
        if not _num(data[f]) or data[f] <= 0:
            raise ConfigError(f"{where}: field {f!r} = {data[f]!r}: expected a positive number")
    if int(data["completed"]) != data["completed"]:
        raise ConfigError(f"{where}: field 'completed' = {data['completed']!r}: expected an integer")
    n = len(data[DETAILED[0]]) if isinstance(data.get(DETAILED[0]), list) else None
    for f in DETAILED + ("start_times", "ttfts", "latencies", "errors"):
        if f in data and (not isinstance(data[f], list) or len(data[f]) != n):
            raise ConfigError(f"{where}: field {f!r}: expected a list as long as 'input_lens'")
    for f in DETAILED + ("start_times",):
        if f in data and not all(_num(v) and v >= 0 for v in data[f]):
            raise ConfigError(f"{where}: field {f!r}: expected non-negative numbers")
    rates = data.get("spec_decode_per_position_acceptance_rates")
    if rates is not None and (not isinstance(rates, list) or not all(_num(r) and 0 <= r <= 1 for r in rates)):
        raise ConfigError(f"{where}: field 'spec_decode_per_position_acceptance_rates': expected rates in [0, 1]")
    rate = data.get("request_rate", "inf")
    if not (rate == "inf" or (_num(rate) and rate > 0) or rate == math.inf):
        raise ConfigError(f"{where}: field 'request_rate' = {rate!r}: expected \"inf\" or a positive number")
    b = data.get("burstiness", 1.0)
    if not (_num(b) and b > 0):
        raise ConfigError(f"{where}: field 'burstiness' = {b!r}: expected a positive number")
    mc = data.get("max_concurrency")
    if mc is not None and not (_num(mc) and mc >= 1):
        raise ConfigError(f"{where}: field 'max_concurrency' = {mc!r}: expected null or a positive integer")
    return data


def read_metrics(path: str | Path, key: str = "--metrics") -> dict:
    """vLLM's spec-decode counters from a Prometheus text dump of /metrics (summed over label sets)."""
    from prometheus_client.parser import text_string_to_metric_families

    from contract.outpaths import read_text

    text = read_text(Path(path), f"{key} file")
    found: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    try:
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                name = s.name[:-6] if s.name.endswith("_total") else s.name
                if name == PER_POS and s.name.endswith("_total"):
                    try:
                        pos = int(s.labels.get("position", ""))
                    except ValueError:
                        raise ConfigError(f"{key} {str(path)!r}: {s.name}: label position={s.labels.get('position')!r} "
                                          "is not an integer") from None
                    per_pos[pos] = per_pos.get(pos, 0.0) + s.value
                elif name in COUNTERS.values() and s.name.endswith("_total"):
                    found[name] = found.get(name, 0.0) + s.value
    except ValueError as err:
        raise ConfigError(f"{key} {str(path)!r}: not Prometheus text format ({err})") from None
    for short, name in COUNTERS.items():
        if name not in found:
            raise ConfigError(f"{key} {str(path)!r}: missing counter {name}_total (is speculative decoding on?)")
    if not per_pos:
        raise ConfigError(f"{key} {str(path)!r}: missing counter {PER_POS}_total{{position=...}}")
    k = max(per_pos) + 1
    out = {short: found[name] for short, name in COUNTERS.items()}
    out["per_position"] = [per_pos.get(j, 0.0) for j in range(k)]
    if out["num_drafts"] <= 0:
        raise ConfigError(f"{key} {str(path)!r}: {COUNTERS['num_drafts']}_total is 0 (no drafts were made)")
    return out


def measured_metrics(result: dict) -> dict:
    """The result's metrics under this project's names (contract/metrics.py; seconds), None where absent."""
    def ms(name):
        v = result.get(name)
        return v / 1e3 if _num(v) else None

    out = {"output_throughput": result["output_throughput"], "request_throughput": result.get("request_throughput"),
           "duration_s": result["duration"], "num_requests": int(result["completed"])}
    for v, ours in LATENCY.items():
        out[f"mean_{ours}"], out[f"p50_{ours}"], out[f"p99_{ours}"] = ms(f"mean_{v}_ms"), ms(f"median_{v}_ms"), ms(f"p99_{v}_ms")
    al, ar = result.get("spec_decode_acceptance_length"), result.get("spec_decode_acceptance_rate")
    out["acceptance_length"] = al if _num(al) else None
    out["draft_acceptance_rate"] = ar / 100.0 if _num(ar) else None
    return out


def position_rates(result: dict, counters: dict | None = None) -> list[float] | None:
    """Per draft position j: accepted at j / drafts (vLLM's per-position acceptance rate); counters first."""
    if counters is not None:
        return [a / counters["num_drafts"] for a in counters["per_position"]]
    rates = result.get("spec_decode_per_position_acceptance_rates")
    return [float(r) for r in rates] if rates else None


# ---------------------------------------------------------------- the acceptance model from the rates

def _model_rates(kind: str, p: np.ndarray, k: int) -> np.ndarray:
    """P(drafts 0..j all pass), j < k, for iid (alpha, decay) or beta (a, b, decay); truth_j = alpha * decay^j."""
    j = np.arange(k)
    tri = j * (j + 1) / 2.0
    if kind == "iid":
        alpha, decay = p
        return alpha ** (j + 1) * decay ** tri
    a, b, decay = p
    from scipy.special import betaln

    return np.exp(betaln(a + j + 1, b) - betaln(a, b)) * decay ** tri


def fit_acceptance(rates: list[float]) -> dict:
    """The [acceptance] table whose per-position rates best match `rates` (least squares in log rate).

    One position: iid alpha = rate. More: iid (alpha, decay) and Beta(a, b) per request (+ decay),
    the better fit wins (iid on a tie); decay in [0.5, 1] as the config allows. The fitted rates come back
    under "fitted_rates" (not a config key: pop it before use)."""
    r = np.clip(np.asarray(rates, np.float64), 1e-6, 1.0)
    k = r.size
    if k == 0:
        raise ConfigError("--measured: no per-position acceptance rates to fit")
    if k == 1:
        return {"model": "iid", "alpha": float(r[0]), "decay": 1.0, "fitted_rates": [float(r[0])]}
    from scipy.optimize import minimize

    lr = np.log(r)
    fits = []
    for kind, x0, bounds in (("iid", [min(r[0], 0.999), 0.99], [(1e-4, 1.0), (0.5, 1.0)]),
                             ("beta", [2.0, 1.0, 0.99], [(1e-2, 1e3), (1e-2, 1e3), (0.5, 1.0)])):
        res = minimize(lambda p: float(np.sum((np.log(np.maximum(_model_rates(kind, p, k), 1e-300)) - lr) ** 2)),
                       x0, bounds=bounds, method="L-BFGS-B")
        fits.append((float(res.fun), kind, res.x))
    best = min(fits, key=lambda f: (round(f[0], 9), f[1] != "iid"))
    _, kind, p = best
    fitted = [float(x) for x in _model_rates(kind, p, k)]
    if kind == "iid":
        return {"model": "iid", "alpha": float(p[0]), "decay": float(p[1]), "fitted_rates": fitted}
    return {"model": "beta", "beta_a": float(p[0]), "beta_b": float(p[1]), "decay": float(p[2]), "fitted_rates": fitted}


# ---------------------------------------------------------------- the workload

def detailed_requests(result: dict) -> list[tuple[float, int, int]] | None:
    """(arrival_s, prompt_len, output_len) per successful request from --save-detailed fields (None without).
    Arrivals: start_times - the first one, when present; else None in every row (the caller makes them)."""
    if not all(isinstance(result.get(f), list) for f in DETAILED):
        return None
    ok = [not e for e in result.get("errors", [""] * len(result["input_lens"]))]
    starts = result.get("start_times")
    t0 = min(starts) if starts else 0.0
    rows = []
    for i, (p, o) in enumerate(zip(result["input_lens"], result["output_lens"])):
        if ok[i] and o >= 1:
            rows.append((float(starts[i]) - t0 if starts else None, max(int(p), 1), int(o)))
    if not rows:
        raise ConfigError("--measured: no successful request with output in 'output_lens'")
    if starts:
        rows.sort(key=lambda r: r[0])
    return rows


def arrival_table(result: dict) -> dict:
    """[workload] arrival keys from request_rate and burstiness: offline, poisson or gamma (cv = 1/sqrt(shape))."""
    rate = result.get("request_rate", "inf")
    if rate == "inf" or rate == math.inf:
        return {"arrival": "offline"}
    b = float(result.get("burstiness", 1.0))
    if b == 1.0:
        return {"arrival": "poisson", "rate": float(rate)}
    return {"arrival": "gamma", "rate": float(rate), "cv": 1.0 / math.sqrt(b)}


# ---------------------------------------------------------------- a simulated run, written as a result

def _stats_ms(x: np.ndarray) -> dict:
    if not x.size:
        return {"mean": 0.0, "median": 0.0, "std": 0.0, "p99": 0.0}
    return {"mean": float(np.mean(x)) * 1e3, "median": float(np.median(x)) * 1e3, "std": float(np.std(x)) * 1e3,
            "p99": float(np.percentile(x, 99)) * 1e3}


def to_bench_serve_json(summary: dict, requests: dict, stats=None, traffic: dict | None = None) -> dict:
    """A run (summary.json metrics + per-request columns id, arrival_s, first_token_s, finish_s,
    prompt_len, output_len) as a `vllm bench serve --save-result --save-detailed` result.

    Times as a client sees them: the benchmark starts at the first arrival, so duration = last
    finish - first arrival and start_times = arrival - first arrival. Spec-decode fields come
    from the summary (sim_position_rates; the draft count from `stats`, a contract.metrics.StepStats,
    when given, else from the acceptance length). ITL fields are not written (the simulator does not model
    streamed chunks). traffic: num_prompts, request_rate, burstiness, max_concurrency to record.
    """
    order = np.argsort(np.asarray(requests["id"]), kind="stable")
    col = {k: np.asarray(requests[k], np.float64)[order] for k in ("arrival_s", "first_token_s", "finish_s",
                                                                  "prompt_len", "output_len")}
    t0 = float(col["arrival_s"].min())
    duration = float(col["finish_s"].max()) - t0
    n, out_tokens, in_tokens = int(col["output_len"].size), int(col["output_len"].sum()), int(col["prompt_len"].sum())
    ttft = col["first_token_s"] - col["arrival_s"]
    lat = col["finish_s"] - col["arrival_s"]
    many = col["output_len"] > 1
    tpot = (lat[many] - ttft[many]) / (col["output_len"][many] - 1)
    res = {"date": "simulated", "backend": "tetris-sim", "label": "tetris simulate", "num_prompts": n,
           "request_rate": "inf", "burstiness": 1.0, "max_concurrency": None}
    res.update(traffic or {})
    res.update({"duration": duration, "completed": n, "failed": 0, "total_input_tokens": in_tokens,
                "total_output_tokens": out_tokens, "request_throughput": n / duration,
                "request_goodput": None, "output_throughput": out_tokens / duration,
                "total_token_throughput": (in_tokens + out_tokens) / duration})
    for name, x in (("ttft", ttft), ("tpot", tpot), ("e2el", lat)):
        for stat, v in _stats_ms(x).items():
            res[f"{stat}_{name}_ms"] = v
    res.update({"input_lens": col["prompt_len"].astype(int).tolist(), "output_lens": col["output_len"].astype(int).tolist(),
                "ttfts": ttft.tolist(), "latencies": lat.tolist(), "start_times": (col["arrival_s"] - t0).tolist(),
                "errors": [""] * n})
    if summary.get("verified_tokens"):
        acc, ver = int(summary["accepted_tokens"]), int(summary["verified_tokens"])
        al = float(summary["acceptance_length"])
        drafts = stats.num_drafts if stats is not None else (int(round(acc / (al - 1.0))) if al > 1.0 else 0)
        res.update({"spec_decode_acceptance_rate": 100.0 * acc / ver, "spec_decode_acceptance_length": al,
                    "spec_decode_num_drafts": int(drafts), "spec_decode_draft_tokens": ver,
                    "spec_decode_accepted_tokens": acc,
                    "spec_decode_per_position_acceptance_rates": sim_position_rates(summary)})
    return res


def sim_position_rates(summary: dict) -> list[float]:
    """vLLM's per-position rates of a simulated run: summary per_position_acceptance[j] = request-steps
    with > j accepted / request-steps whose window reached position j. vLLM always verifies full
    windows, the simulator cuts them at a request's last token: dividing by the windows that reached
    j (not by every draft) is what vLLM would count had those windows been full."""
    return [float(x) for x in summary.get("per_position_acceptance", [])]


def to_prometheus_text(summary: dict, stats) -> str:
    """The spec-decode counters of a simulated run as vLLM's /metrics would show them (Prometheus text)."""
    lines = []
    for short, value in (("num_drafts", stats.num_drafts), ("num_draft_tokens", summary["verified_tokens"]),
                         ("num_accepted_tokens", summary["accepted_tokens"])):
        name = COUNTERS[short]
        lines += [f"# HELP {name}_total {short}", f"# TYPE {name}_total counter",
                  f'{name}_total{{engine="0",model_name="sim"}} {float(value)}']
    lines += [f"# HELP {PER_POS}_total accepted per position", f"# TYPE {PER_POS}_total counter"]
    lines += [f'{PER_POS}_total{{engine="0",model_name="sim",position="{j}"}} {float(round(r * stats.num_drafts))}'
              for j, r in enumerate(sim_position_rates(summary))]
    return "\n".join(lines) + "\n"
