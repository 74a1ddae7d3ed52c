"""Workload generation: request arrivals and lengths, deterministic from a seed.

    for req in iter_requests(cfg):          # Request(id, arrival_s, prompt_len, output_len)
        ...
    for chunk in iter_request_chunks(cfg):  # RequestChunk of arrays (fast path, same values)
        ...
    rng = acceptance_rng(cfg.seed, request_id)          # per-request numpy Generator
    u = acceptance_uniforms(cfg.seed, ids, positions)   # vectorised counter-based U(0,1)

Requests are produced lazily in fixed-size chunks, so a million requests run in
flat memory. Each quantity has its own numpy SeedSequence stream (arrivals,
prompt lengths, output lengths), so changing one distribution never changes
another's draws, and every policy run from the same config sees the same
workload. Requests are numbered 0.. in arrival order.

Arrivals (workload.arrival): offline (all at t=0), poisson(rate), gamma(rate, cv)
and trace (a JSONL/CSV file with arrival_s, prompt_len, output_len columns, or a
ShareGPT-format JSON whose conversations become lengths with a tokenizer-free
estimate of ~4 characters per token; files without arrival_s get Poisson(rate)
arrivals). Lengths (workload.prompt_len / output_len): fixed, uniform
(inclusive), lognormal (median, sigma; clipped to [1, max]) and empirical (a
file of integers, one per line, sampled with replacement; clipped to max).

Acceptance randomness is per request and per output-token position: whether
request i's draft landing on output position t passes is decided by
acceptance_uniforms(seed, i, t) (a splitmix64 hash of seed, i, t, stream), so
the outcome does not depend on how windows were allocated: common random
numbers across policies. acceptance_rng gives a sequential Generator for code
that needs one (SeedSequence(seed, spawn_key=(STREAM_ACCEPT, id))).
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from contract.config import Config, ConfigError, LengthDist

CHUNK = 65536  # requests per generated chunk (fixed: results never depend on it)
CHARS_PER_TOKEN = 4.0  # tokenizer-free length estimate for ShareGPT text

# Ids of every independent random stream of a run, in one place (the values are part of what a
# fixed seed reproduces: never renumber). 0-3: SeedSequence spawn keys here and the acceptance
# hash (STREAM_ACCEPT); 4-7: acceptance_uniforms streams of sim/acceptance.py.
STREAM_ARRIVAL, STREAM_PROMPT, STREAM_OUTPUT, STREAM_ACCEPT = 0, 1, 2, 3
STREAM_ATTR = 4  # per-request acceptance attributes (beta alpha, mixture regime)
STREAM_SEGMENT = 5  # mixture/segment: regime switches along a request
STREAM_NOISE, STREAM_NOISE2 = 6, 7  # noisy estimates: the two uniforms of a Box-Muller normal


@dataclass
class Request:
    id: int  # 0.. in arrival order
    arrival_s: float  # seconds since the start of the run
    prompt_len: int  # tokens
    output_len: int  # tokens to generate (>= 1)


@dataclass
class RequestChunk:
    id: np.ndarray  # [n] int64
    arrival_s: np.ndarray  # [n] float64 seconds, non-decreasing
    prompt_len: np.ndarray  # [n] int64 tokens
    output_len: np.ndarray  # [n] int64 tokens (>= 1)

    def __len__(self) -> int:
        return int(self.id.size)


def stream(seed: int, key: int) -> np.random.Generator:
    """The Generator of one named stream (STREAM_*) of a run seeded with `seed`."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(int(seed), spawn_key=(key,))))


def acceptance_rng(seed: int, request_id: int) -> np.random.Generator:
    """A per-request Generator for acceptance draws (same for every policy)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(STREAM_ACCEPT, int(request_id)))
    return np.random.Generator(np.random.PCG64(ss))


_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def hash_key(seed: int, stream_id: int) -> np.uint64:
    """A 64-bit key for one (seed, stream) pair of acceptance_uniforms."""
    with np.errstate(over="ignore"):
        return _mix(np.array([(int(seed) * 0x9E3779B97F4A7C15 + int(stream_id) * 0xD1B54A32D192ED03) & (2**64 - 1)], dtype=np.uint64))[0]


def acceptance_uniforms(seed: int, ids, positions, stream_id: int = STREAM_ACCEPT, key: np.uint64 | None = None) -> np.ndarray:
    """U(0,1) float64 for each (request id, position) pair, broadcast together.

    Stateless and counter-based: the value for (seed, id, position, stream) is
    fixed, whichever order or batch it is asked in (one splitmix64 round over
    key + id * C + position * golden). `key` (from hash_key) skips re-hashing
    the seed in hot loops.
    """
    if key is None:
        key = hash_key(seed, stream_id)
    i = np.asarray(ids).astype(np.uint64)
    t = np.asarray(positions).astype(np.uint64)
    shape = np.broadcast_shapes(i.shape, t.shape, np.shape(key))  # an array of keys broadcasts too
    if not shape:  # 0-d: numpy warns on scalar wrap-around, arrays wrap silently
        i, t = i.reshape(1), t.reshape(1)
    x = _mix(i * _M1 + t * _GOLD + key)
    return ((x >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)).reshape(shape)


# ---------------------------------------------------------------- lengths

def _read_int_file(path: str, key: str) -> np.ndarray:
    from contract.outpaths import read_text

    if not path:
        raise ConfigError(f"{key}.path: empirical length file {path!r} not found")
    text = read_text(path, f"{key}.path: empirical length file")
    try:
        values = np.array([int(float(s)) for s in text.split()], dtype=np.int64)
    except ValueError:
        raise ConfigError(f"{key}.path: {path!r} must hold one integer per line") from None
    if values.size == 0 or values.min() < 1:
        raise ConfigError(f"{key}.path: {path!r} must hold positive integers")
    return values


def check_length_dist(d: LengthDist, key: str) -> None:
    if d.dist == "uniform" and d.low > d.high:
        raise ConfigError(f"{key}.low: {d.low} is above {key}.high = {d.high}")
    if d.dist == "empirical":
        _read_int_file(d.path, key)


def _length_sampler(d: LengthDist, rng: np.random.Generator, key: str):
    if d.dist == "fixed":
        return lambda n: np.full(n, d.value, dtype=np.int64)
    if d.dist == "uniform":
        check_length_dist(d, key)
        return lambda n: rng.integers(d.low, d.high, size=n, endpoint=True, dtype=np.int64)
    if d.dist == "lognormal":
        mu = float(np.log(d.median))
        return lambda n: np.clip(np.rint(np.exp(mu + d.sigma * rng.standard_normal(n))), 1, d.max).astype(np.int64)
    if d.dist == "empirical":
        values = np.minimum(_read_int_file(d.path, key), d.max)
        return lambda n: values[rng.integers(0, values.size, size=n)]
    raise ConfigError(f"{key}.dist: unknown distribution {d.dist!r}")


# ---------------------------------------------------------------- traces

def _est_tokens(text: str) -> int:
    return max(1, int(round(len(text) / CHARS_PER_TOKEN)))


def _sharegpt_rows(data) -> list[dict]:
    rows = []
    for item in data:
        if not isinstance(item, dict):
            continue
        conv = item.get("conversations") or item.get("conversation") or []
        for a, b in zip(conv, conv[1:]):
            if not (isinstance(a, dict) and isinstance(b, dict)):
                continue
            if a.get("from") in ("human", "user") and b.get("from") in ("gpt", "assistant", "chatgpt"):
                rows.append({"prompt_len": _est_tokens(str(a.get("value", ""))), "output_len": _est_tokens(str(b.get("value", "")))})
                break  # first turn of each conversation, as vLLM's benchmark does
    return rows


def read_trace_file(path: str, key: str = "workload.trace") -> dict[str, np.ndarray]:
    """Columns arrival_s (optional), prompt_len, output_len from JSONL, CSV or ShareGPT JSON."""
    from contract.outpaths import read_text

    p = Path(path)
    if not path:
        raise ConfigError(f"{key}: trace file {path!r} not found")
    text = read_text(p, f"{key}: trace file")
    rows: list[dict]
    try:
        if p.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        elif text.lstrip().startswith("["):
            data = json.loads(text)
            rows = _sharegpt_rows(data) if data and isinstance(data[0], dict) and ("conversations" in data[0] or "conversation" in data[0]) else data
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, csv.Error) as err:
        raise ConfigError(f"{key}: cannot parse {path!r}: {err}") from None
    if not rows:
        raise ConfigError(f"{key}: {path!r} holds no requests")
    cols: dict[str, np.ndarray] = {}
    try:
        for name in ("prompt_len", "output_len"):
            cols[name] = np.array([int(float(r[name])) for r in rows], dtype=np.int64)
        if all("arrival_s" in r and r["arrival_s"] not in ("", None) for r in rows):
            cols["arrival_s"] = np.array([float(r["arrival_s"]) for r in rows], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{key}: {path!r} rows need prompt_len and output_len ({err})") from None
    if cols["prompt_len"].min() < 1 or cols["output_len"].min() < 1:
        raise ConfigError(f"{key}: {path!r} lengths must be >= 1")
    if "arrival_s" in cols:
        if not np.all(np.isfinite(cols["arrival_s"])) or cols["arrival_s"].min() < 0:
            raise ConfigError(f"{key}: {path!r} arrival_s must be finite and >= 0")
        order = np.argsort(cols["arrival_s"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    return cols


# ---------------------------------------------------------------- arrivals

def _gaps(w, rng: np.random.Generator, n: int) -> np.ndarray:
    if w.arrival == "poisson" or w.arrival == "trace":
        return rng.exponential(1.0 / w.rate, size=n)
    shape = 1.0 / (w.cv * w.cv)  # gamma: mean 1/rate, cv of gaps = cv
    return rng.gamma(shape, 1.0 / (w.rate * shape), size=n)


def mean_length(d: LengthDist) -> float:
    """Mean tokens of a length distribution (upper bound for clipped ones)."""
    if d.dist == "fixed":
        return float(d.value)
    if d.dist == "uniform":
        return 0.5 * (d.low + d.high)
    if d.dist == "lognormal":
        return float(min(d.max, d.median * np.exp(0.5 * d.sigma ** 2)))
    return float(d.max)


def size_note(cfg: Config, n_policies: int, tokens_per_s: float, what: str, n: int | None = None) -> str | None:
    """'note: ...' when a run is estimated (before it starts) to take over a minute at
    tokens_per_s output tokens per second, or has prompts beyond any real context; else None.
    n: num_requests(cfg) when the caller has it (a trace file is read to count it)."""
    n = num_requests(cfg) if n is None else n
    out_tokens = n * mean_length(cfg.workload.output_len)
    prompt = mean_length(cfg.workload.prompt_len)
    secs = n_policies * out_tokens / tokens_per_s
    notes = []
    if secs > 60:
        notes.append(f"{n:,} requests x {n_policies} policies, ~{out_tokens:.3g} output tokens each: "
                     f"roughly {secs / 60:.0f} min of {what}")
    if prompt > 1e6:
        notes.append(f"mean prompt ~{prompt:.3g} tokens is beyond any real model's context")
    return ("note: " + "; ".join(notes)) if notes else None


def num_requests(cfg: Config) -> int:
    """How many requests the workload yields (a trace may hold fewer than num_requests)."""
    w = cfg.workload
    if w.arrival == "trace":
        return min(w.num_requests, read_trace_file(w.trace)["output_len"].size)
    return w.num_requests


def iter_request_chunks(cfg: Config) -> Iterator[RequestChunk]:
    """The workload as RequestChunk arrays of up to CHUNK requests, in arrival order."""
    w = cfg.workload
    check_length_dist(w.prompt_len, "workload.prompt_len")
    check_length_dist(w.output_len, "workload.output_len")
    arr_rng = stream(cfg.seed, STREAM_ARRIVAL)
    if w.arrival == "trace":
        cols = read_trace_file(w.trace)
        total = min(w.num_requests, cols["output_len"].size)
        prompt = lambda a, n: cols["prompt_len"][a : a + n]
        output = lambda a, n: cols["output_len"][a : a + n]
    else:
        total = w.num_requests
        ps = _length_sampler(w.prompt_len, stream(cfg.seed, STREAM_PROMPT), "workload.prompt_len")
        os_ = _length_sampler(w.output_len, stream(cfg.seed, STREAM_OUTPUT), "workload.output_len")
        prompt = lambda a, n: ps(n)
        output = lambda a, n: os_(n)
    clock = 0.0
    for start in range(0, total, CHUNK):
        n = min(CHUNK, total - start)
        if w.arrival == "offline":
            arrival = np.zeros(n)
        elif w.arrival == "trace" and "arrival_s" in cols:
            arrival = cols["arrival_s"][start : start + n]
        else:
            arrival = clock + np.cumsum(_gaps(w, arr_rng, n))
            clock = float(arrival[-1])
        yield RequestChunk(
            id=np.arange(start, start + n, dtype=np.int64),
            arrival_s=np.asarray(arrival, dtype=np.float64),
            prompt_len=np.asarray(prompt(start, n), dtype=np.int64),
            output_len=np.asarray(output(start, n), dtype=np.int64),
        )


def iter_requests(cfg: Config) -> Iterator[Request]:
    """The workload one Request at a time (lazy; same values as iter_request_chunks)."""
    for c in iter_request_chunks(cfg):
        for i, a, p, o in zip(c.id.tolist(), c.arrival_s.tolist(), c.prompt_len.tolist(), c.output_len.tolist()):
            yield Request(i, a, p, o)
