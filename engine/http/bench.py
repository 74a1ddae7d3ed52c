"""The load generator: the config's workload replayed against an OpenAI-compatible server.

    result = run_bench(cfg, "http://127.0.0.1:8000")    # dict in `vllm bench serve`'s result format
    write_result("result.json", result)

Requests are the ones `tetris engine` runs for the same config (contract.workload + engine.serve
build_workload): same arrival times (offline = all at once), the same prompt token ids (sent as a
token-id prompt, so lengths are exact on any server with this tokenizer), max_tokens = output_len,
ignore_eos = true, temperature = engine.temperature, streaming with usage. The client is this
in-house one (httpx, asyncio); its metric definitions follow vLLM's benchmarks/serve.py:
ttft = first streamed chunk - send; itl = gaps between chunks; tpot = (e2el - ttft) / (output - 1)
per request with output > 1; throughputs over the benchmark duration (first send to last answer).
Spec-decode fields come from the server's /metrics counters (after - before), as vLLM's client does;
server_cpu_s / server_cpu_ms_per_output_token (not in vLLM's format) from process_cpu_seconds_total
where the server exports it (tetris serve does).
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import datetime, timezone

import numpy as np

from contract.config import Config, ConfigError

SPEC = ("vllm:spec_decode_num_drafts_total", "vllm:spec_decode_num_draft_tokens_total",
        "vllm:spec_decode_num_accepted_tokens_total")
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


def load_tokenizer(pair: str):
    from transformers import AutoTokenizer

    from engine.pairs import SPLIT_DRAFT_META, resolve_pair

    path = resolve_pair(pair)
    if (path / SPLIT_DRAFT_META).is_file():
        from engine.smollm.draft import load_tokenizer as split_tokenizer
        from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, target_dir

        try:
            return split_tokenizer(target_dir(DEFAULT_DIR)), path
        except MissingDependency as e:
            raise ConfigError(f"engine.pair: {path.name}: {e}") from None
    tok_dir = path / "target" if (path / "target" / "tokenizer.json").exists() else path
    return AutoTokenizer.from_pretrained(str(tok_dir)), path


def workload_requests(cfg: Config, tokenizer=None, pair_dir=None) -> list[tuple[float, list[int], int]]:
    """(arrival_s, prompt ids, output_len) per request, as `tetris engine` builds them."""
    from engine.serve import build_workload

    if tokenizer is None:
        tokenizer, pair_dir = load_tokenizer(cfg.engine.pair)
    wl = build_workload(cfg, tokenizer, pair_dir)
    offline = cfg.workload.arrival == "offline"
    return [(0.0 if offline else float(r.arrival_s), list(p), int(r.output_len)) for r, p in zip(wl.requests, wl.prompts)]


def parse_metrics(text: str) -> dict:
    """{name or name{position=..}: value} for the spec-decode counters of a Prometheus text page."""
    out = {}
    for line in text.splitlines():
        if not (line.startswith("vllm:spec_decode") or line.startswith("process_cpu_seconds_total")):
            continue
        m = re.match(r'([^{\s]+)(\{[^}]*\})?\s+([-+0-9.eEinfaN]+)', line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        pos = re.search(r'position="(\d+)"', labels)
        key = f"{name}[{pos.group(1)}]" if pos else name
        out[key] = out.get(key, 0.0) + value
    return out


async def _one(client, url: str, payload: dict, t_send: float, timeout: float) -> dict:
    out = {"success": False, "ttft": 0.0, "itl": [], "latency": 0.0, "output_tokens": 0, "generated_text": "",
           "error": "", "prompt_len": len(payload["prompt"])}
    last = t_send
    try:
        async with client.stream("POST", url, json=payload, timeout=timeout) as resp:
            if resp.status_code != 200:
                out["error"] = f"HTTP {resp.status_code}: {(await resp.aread()).decode(errors='replace')[:300]}"
                return out
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if "error" in obj:
                    out["error"] = obj["error"].get("message", str(obj["error"]))
                    return out
                now = time.perf_counter()
                if obj.get("choices"):
                    if out["ttft"] == 0.0:
                        out["ttft"] = now - t_send
                    else:
                        out["itl"].append(now - last)
                    last = now
                    out["generated_text"] += obj["choices"][0].get("text") or ""
                if obj.get("usage"):
                    out["output_tokens"] = int(obj["usage"].get("completion_tokens") or 0)
        out["latency"] = last - t_send
        out["success"] = True
    except Exception as err:  # a failed request is counted, never fatal (as vLLM's client)
        out["error"] = f"{type(err).__name__}: {err}"
    return out


async def _drive(base_url: str, model: str, reqs, temperature: float, timeout: float) -> tuple[list, float]:
    import httpx

    url = base_url.rstrip("/") + "/v1/completions"
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        t0 = time.perf_counter()

        async def send(arrival, prompt, out_len):
            await asyncio.sleep(max(0.0, t0 + arrival - time.perf_counter()))
            payload = {"model": model, "prompt": prompt, "max_tokens": out_len, "temperature": temperature,
                       "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            return await _one(client, url, payload, time.perf_counter(), timeout)

        outs = await asyncio.gather(*(send(a, p, n) for a, p, n in reqs))
        return outs, time.perf_counter() - t0


def _get(base_url: str, path: str, timeout: float = 30.0):
    import httpx

    try:
        r = httpx.get(base_url.rstrip("/") + path, timeout=timeout)
    except httpx.HTTPError as err:
        raise ConfigError(f"--base-url {base_url!r}: cannot reach the server ({type(err).__name__}: {err})") from None
    return r


def run_bench(cfg: Config, base_url: str, model: str | None = None, label: str = "", timeout: float = 600.0,
              reqs=None) -> dict:
    """Replay the workload; returns vllm bench serve's result dict (see summarize)."""
    if reqs is None:
        reqs = workload_requests(cfg)
    if model is None:
        data = _get(base_url, "/v1/models").json().get("data") or [{}]
        model = data[0].get("id")
    before = parse_metrics(_get(base_url, "/metrics").text)
    outs, duration = asyncio.run(_drive(base_url, model, reqs, cfg.engine.temperature, timeout))
    after = parse_metrics(_get(base_url, "/metrics").text)
    spec = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    rate = "inf" if cfg.workload.arrival == "offline" else cfg.workload.rate
    head = {"date": datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"), "backend": "openai",
            "endpoint_type": "openai", "client": "tetris bench-serve (httpx)", "label": label, "model_id": model,
            "base_url": base_url, "num_prompts": len(reqs), "request_rate": rate,
            "burstiness": 1.0, "max_concurrency": None}
    res = head | summarize(outs, duration, spec)
    if "process_cpu_seconds_total" in spec:  # not in vLLM's format: the server's CPU seconds during the run
        cpu = spec["process_cpu_seconds_total"]
        res["server_cpu_s"] = cpu
        res["server_cpu_ms_per_output_token"] = 1e3 * cpu / res["total_output_tokens"] if res["total_output_tokens"] else 0.0
    return res


def _stats(name: str, xs: list[float]) -> dict:
    a = np.asarray(xs, dtype=float) * 1000.0
    if a.size == 0:
        a = np.zeros(1)
    return {f"mean_{name}_ms": float(a.mean()), f"median_{name}_ms": float(np.median(a)),
            f"std_{name}_ms": float(a.std()), f"p99_{name}_ms": float(np.percentile(a, 99))}


def summarize(outs: list[dict], duration: float, spec: dict | None = None) -> dict:
    """vllm bench serve's fields from per-request outcomes (its calculate_metrics definitions)."""
    ok = [o for o in outs if o["success"]]
    out_lens = [o["output_tokens"] if o["success"] else 0 for o in outs]
    tpots = [(o["latency"] - o["ttft"]) / (o["output_tokens"] - 1) for o in ok if o["output_tokens"] > 1]
    total_in = sum(o["prompt_len"] for o in ok)
    total_out = sum(out_lens)
    res = {"duration": duration, "completed": len(ok), "failed": len(outs) - len(ok), "total_input_tokens": total_in,
           "total_output_tokens": total_out, "request_throughput": len(ok) / duration if duration else 0.0,
           "output_throughput": total_out / duration if duration else 0.0,
           "total_token_throughput": (total_in + total_out) / duration if duration else 0.0}
    res |= _stats("ttft", [o["ttft"] for o in ok]) | _stats("tpot", tpots)
    res |= _stats("itl", [x for o in ok for x in o["itl"]]) | _stats("e2el", [o["latency"] for o in ok])
    spec = spec or {}
    drafts, tokens, acc = (spec.get(k, 0.0) for k in SPEC)
    if drafts > 0:
        k = 0
        while f"{PER_POS}[{k}]" in spec:
            k += 1
        res |= {"spec_decode_acceptance_rate": 100.0 * acc / tokens if tokens else 0.0,
                "spec_decode_acceptance_length": 1.0 + acc / drafts, "spec_decode_num_drafts": int(drafts),
                "spec_decode_draft_tokens": int(tokens), "spec_decode_accepted_tokens": int(acc),
                "spec_decode_per_position_acceptance_rates": [spec[f"{PER_POS}[{j}]"] / drafts for j in range(k)]}
    res |= {"input_lens": [o["prompt_len"] for o in outs], "output_lens": out_lens,
            "ttfts": [o["ttft"] for o in outs], "itls": [o["itl"] for o in outs],
            "generated_texts": [o["generated_text"] for o in outs], "errors": [o["error"] for o in outs]}
    return res


def write_result(path, result: dict) -> None:
    from pathlib import Path

    from engine.serve import _atomic_write

    _atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(result, indent=1)))


def summary_line(r: dict) -> str:
    return (f"completed {r['completed']}/{r['num_prompts']} in {r['duration']:.2f} s: output {r['output_throughput']:.1f} "
            f"tok/s, TTFT mean {r['mean_ttft_ms']:.1f} / p99 {r['p99_ttft_ms']:.1f} ms, TPOT mean "
            f"{r['mean_tpot_ms']:.2f} / p99 {r['p99_tpot_ms']:.2f} ms")
