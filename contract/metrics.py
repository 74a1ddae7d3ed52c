"""Serving metrics with vLLM's names, shared by the simulator and the engine.

    stats = StepStats()
    stats.add_step(batch=N, drafts=K, lengths=L, accepted=A, emitted=E)   # once per step
    records = [RequestRecord(id, arrival_s, first_token_s, finish_s, prompt_len, output_len), ...]
    summary = summarize(records, stats, duration_s, slo)                  # dict of floats
    sink = RecordSink(slo); sink.add(ids, arrival, first, finish, prompt, output)  # bounded memory

`records` may also be a dict of equal-length arrays with the RequestRecord
field names (columnar form) or a RecordSink, which keeps exact columns up to a
limit (2^16 requests) and past it folds requests into running sums and 0.1%
log-histograms, so a million-request run needs flat memory. Times are seconds
on one clock.

Definitions (per request): ttft_s = first_token_s - arrival_s; e2e_s =
finish_s - arrival_s; tpot_s = (finish_s - first_token_s) / (output_len - 1),
only over requests with output_len > 1 (as vLLM). Per run:
  output_throughput      output tokens / duration_s
  request_throughput     requests / duration_s
  acceptance_length      1 + accepted / num_drafts, num_drafts = request-steps
                         that verified at least one draft (includes the bonus token)
  draft_acceptance_rate  accepted / verified draft tokens (the paper's VSR)
  per_position_acceptance[j]  accepted / verified at window position j+1
  verified_tokens        draft tokens verified (sum of windows); wasted_tokens =
                         verified - accepted; drafted_tokens = D * batch summed (D <= K drafted,
                         policy.early_stop)
  mean_budget            verified draft tokens per step; mean_batch requests per step
  goodput                requests/s meeting every SLO set (slo.ttft_s, slo.tpot_s > 0)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RequestRecord:
    id: int
    arrival_s: float  # seconds
    first_token_s: float  # seconds: end of the step that emitted its first output token
    finish_s: float  # seconds: end of the step that emitted its last output token
    prompt_len: int  # tokens
    output_len: int  # tokens generated


RECORD_FIELDS = ("id", "arrival_s", "first_token_s", "finish_s", "prompt_len", "output_len")


class StepStats:
    """Per-run step counters: plain numbers plus window / accepted histograms.

    add_step only queues the step's arrays; they are folded in batches (and on
    every read of a derived counter), so a step costs about a microsecond.
    """

    _FLUSH = 512  # steps queued before folding

    def __init__(self):
        self.num_steps = 0  # target verification steps
        self.request_steps = 0  # sum over steps of running requests
        self.drafted_tokens = 0  # draft tokens generated (K per running request per step)
        self.target_s = 0.0  # seconds spent in verification
        self.draft_s = 0.0  # seconds spent drafting (what the step paid, after overlap)
        self.prefill_s = 0.0  # seconds spent in prefill
        self.prefill_calls = 0  # admission passes (one batched prefill of the requests joining at once)
        self.mixed_prefills = 0  # requests whose prefill rode in a verification pass (server.admission = "mixed")
        self._window_hist = np.zeros(1, np.int64)  # [L+1] request-steps per verified window L
        self._accepted_hist = np.zeros(1, np.int64)  # [A+1] request-steps per accepted count A
        self._emitted = 0  # output tokens emitted by decoding steps
        self._pending: list[tuple] = []  # queued (lengths, accepted, emitted) arrays

    def add_step(self, batch: int, drafts: int, lengths, accepted, emitted) -> None:
        """One step: `batch` requests drafted `drafts` tokens, verified lengths[N], accepted[N], emitted[N]."""
        self.num_steps += 1
        self.request_steps += batch
        self.drafted_tokens += batch * drafts
        # copies: callers may reuse their arrays; the fold happens later
        self._pending.append((np.array(lengths, np.int64), np.array(accepted, np.int64), np.array(emitted, np.int64)))
        if len(self._pending) >= self._FLUSH:
            self._flush()

    @staticmethod
    def _add_hist(hist: np.ndarray, values: np.ndarray) -> np.ndarray:
        counts = np.bincount(values)
        if counts.size > hist.size:
            counts[: hist.size] += hist
            return counts
        hist[: counts.size] += counts
        return hist

    def _flush(self) -> None:
        if not self._pending:
            return
        ls, acc, em = zip(*self._pending)
        self._pending = []
        self._window_hist = self._add_hist(self._window_hist, np.concatenate(ls))
        self._accepted_hist = self._add_hist(self._accepted_hist, np.concatenate(acc))
        self._emitted += int(np.concatenate(em).sum())

    @property
    def window_hist(self) -> np.ndarray:  # [L+1] int64 request-steps per verified window L
        self._flush()
        return self._window_hist

    @property
    def accepted_hist(self) -> np.ndarray:  # [A+1] int64 request-steps per accepted count A
        self._flush()
        return self._accepted_hist

    @property
    def emitted_tokens(self) -> int:  # output tokens emitted by decoding steps
        self._flush()
        return self._emitted

    @property
    def verified_tokens(self) -> int:  # draft tokens verified (sum of windows)
        h = self.window_hist
        return int(np.dot(h, np.arange(h.size)))

    @property
    def accepted_tokens(self) -> int:  # draft tokens accepted
        h = self.accepted_hist
        return int(np.dot(h, np.arange(h.size)))

    @property
    def num_drafts(self) -> int:  # request-steps with a window > 0
        return int(self.window_hist[1:].sum())

    @staticmethod
    def _at_least(hist: np.ndarray) -> np.ndarray:
        """[j] = request-steps with value > j (position j+1 reached), j = 0..max-1."""
        return hist[::-1].cumsum()[::-1][1:]

    @property
    def verified_at(self) -> np.ndarray:  # [K] int64: times window position j+1 was verified
        return self._at_least(self.window_hist)

    @property
    def accepted_at(self) -> np.ndarray:  # [K] int64: times window position j+1 was accepted
        a = self._at_least(self.accepted_hist)
        return np.concatenate([a, np.zeros(max(0, self.verified_at.size - a.size), np.int64)])

    def merge(self, other: "StepStats") -> None:
        """Add another run's counters (e.g. another replica)."""
        for name in ("num_steps", "request_steps", "drafted_tokens", "target_s", "draft_s", "prefill_s", "prefill_calls",
                     "mixed_prefills"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self._flush()
        self._emitted += other.emitted_tokens
        for name in ("_window_hist", "_accepted_hist"):
            mine, theirs = getattr(self, name), getattr(other, name[1:])
            if theirs.size > mine.size:
                mine, theirs = theirs.copy(), mine
            mine[: theirs.size] += theirs
            setattr(self, name, mine)


def _columns(records) -> dict[str, np.ndarray]:
    if isinstance(records, RecordSink):
        return records.columns()
    if isinstance(records, dict):
        return {k: np.asarray(records[k], dtype=np.float64) for k in RECORD_FIELDS[1:]}
    recs = list(records)
    return {k: np.array([getattr(r, k) for r in recs], dtype=np.float64) for k in RECORD_FIELDS[1:]}


def _latencies(c: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ttft [n], tpot [n] (NaN for one-token outputs), e2e [n], output_len [n] from record columns."""
    out = np.asarray(c["output_len"], dtype=np.float64)
    ttft = c["first_token_s"] - c["arrival_s"]
    e2e = c["finish_s"] - c["arrival_s"]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (c["finish_s"] - c["first_token_s"]) / (out - 1), np.nan)
    return ttft, tpot, e2e, out


def _slo_ok(ttft, tpot, slo) -> np.ndarray | None:
    ttft_slo = getattr(slo, "ttft_s", 0.0) if slo is not None else 0.0
    tpot_slo = getattr(slo, "tpot_s", 0.0) if slo is not None else 0.0
    if not (ttft_slo > 0 or tpot_slo > 0):
        return None
    ok = np.ones(ttft.size, dtype=bool)
    if ttft_slo > 0:
        ok &= ttft <= ttft_slo
    if tpot_slo > 0:
        ok &= ~(tpot > tpot_slo)  # one-token outputs (NaN) have no TPOT to miss
    return ok


# log-spaced latency histogram of RecordSink beyond its exact limit: bin b holds
# [HIST_MIN * HIST_RATIO**b, HIST_MIN * HIST_RATIO**(b+1)); bin 0 also takes everything smaller
HIST_MIN, HIST_RATIO, HIST_BINS = 1e-7, 1.001, 46_000  # covers 1e-7 s .. ~1e13 s at 0.1% resolution


class RecordSink:
    """Finished requests, in bounded memory.

    Keeps exact per-request columns up to `exact_limit` requests (then summaries
    are exact); past it, folds them into running sums and log-spaced histograms
    (mean exact, p50/p99 within 0.1% relative) and hands each folded block to
    `writer(columns)` (e.g. a requests.csv stream) so nothing per request stays
    in memory. Columns: id, arrival_s, first_token_s, finish_s, prompt_len,
    output_len, replica.
    """

    INT = ("id", "prompt_len", "output_len", "replica")
    FLOAT = ("arrival_s", "first_token_s", "finish_s")

    def __init__(self, slo=None, exact_limit: int = 1 << 16, writer=None, block: int = 8192):
        self.slo, self.exact_limit, self.writer, self.block = slo, exact_limit, writer, block
        self.exact = True
        self.rows = 0  # rows buffered
        self.bi = np.zeros((1024, 4), np.int64)  # [cap, 4] id, prompt_len, output_len, replica
        self.bf = np.zeros((1024, 3))  # [cap, 3] arrival_s, first_token_s, finish_s (seconds)
        self.count = 0  # requests folded
        self.output_tokens = 0
        self.sums = {"ttft_s": 0.0, "tpot_s": 0.0, "e2e_s": 0.0}
        self.counts = {"ttft_s": 0, "tpot_s": 0, "e2e_s": 0}
        self.hist = {k: np.zeros(HIST_BINS, np.int64) for k in self.sums}
        self.slo_ok = 0
        self.last_finish_s = 0.0  # latest finish seen (seconds)

    def __len__(self) -> int:
        return self.count + self.rows

    def add(self, ids, arrival, first, finish, prompt, output, replica=0) -> None:
        m = len(ids)
        a = self.rows
        if a + m > self.bi.shape[0]:
            cap = 2 * (a + m)
            self.bi = np.concatenate([self.bi[:a], np.zeros((cap - a, 4), np.int64)])
            self.bf = np.concatenate([self.bf[:a], np.zeros((cap - a, 3))])
        self.bi[a : a + m, 0], self.bi[a : a + m, 1], self.bi[a : a + m, 2], self.bi[a : a + m, 3] = ids, prompt, output, replica
        self.bf[a : a + m, 0], self.bf[a : a + m, 1], self.bf[a : a + m, 2] = arrival, first, finish
        self.rows = a + m
        self.last_finish_s = max(self.last_finish_s, float(np.max(finish)))
        if self.exact and self.rows > self.exact_limit:
            self.exact = False
        if not self.exact and self.rows >= self.block:
            self._fold()

    def _buffered(self) -> dict[str, np.ndarray]:
        r = self.rows
        cols = {k: self.bi[:r, j] for j, k in enumerate(self.INT)}
        cols.update({k: self.bf[:r, j] for j, k in enumerate(self.FLOAT)})
        return cols

    def _fold(self) -> None:
        cols = self._buffered()
        ttft, tpot, e2e, out = _latencies(cols)
        for name, x in (("ttft_s", ttft), ("tpot_s", tpot), ("e2e_s", e2e)):
            x = x[~np.isnan(x)]
            self.sums[name] += float(x.sum())
            self.counts[name] += x.size
            b = np.floor(np.log(np.maximum(x, HIST_MIN) / HIST_MIN) / np.log(HIST_RATIO)).astype(np.int64)
            self.hist[name] += np.bincount(np.clip(b, 0, HIST_BINS - 1), minlength=HIST_BINS)
        ok = _slo_ok(ttft, tpot, self.slo)
        self.slo_ok += int(ok.sum()) if ok is not None else 0
        self.output_tokens += int(out.sum())
        self.count += self.rows
        if self.writer is not None:
            self.writer(cols)
        self.rows = 0
        if self.bi.shape[0] > 4 * self.block:  # give back the exact-phase buffers
            self.bi, self.bf = self.bi[: self.block].copy(), self.bf[: self.block].copy()

    def columns(self) -> dict[str, np.ndarray]:
        """Exact columns ordered by id (only while within exact_limit)."""
        if not self.exact:
            raise ValueError("RecordSink is past its exact limit: per-request columns were not kept")
        cols = self._buffered()
        order = np.argsort(cols["id"], kind="stable")
        return {k: v[order] for k, v in cols.items()}

    def close(self) -> None:
        """Flush to the writer (exact mode: once, in id order)."""
        if self.exact:
            if self.writer is not None and self.rows:
                self.writer(self.columns())
        elif self.rows:
            self._fold()

    def _hist_percentile(self, name: str, q: float) -> float:
        h = self.hist[name]
        n = int(h.sum())
        if n == 0:
            return float("nan")
        b = int(np.searchsorted(np.cumsum(h), q / 100.0 * n, side="left"))
        return float(HIST_MIN * HIST_RATIO ** (b + 0.5))

    def summary(self, duration_s: float) -> dict:
        """The request-level part of summarize() from the folded statistics."""
        self.close()
        dists = {name: (self.sums[name] / self.counts[name] if self.counts[name] else float("nan"),
                        self._hist_percentile(name, 50), self._hist_percentile(name, 99)) for name in LATENCIES}
        return request_metrics(self.count, duration_s, self.output_tokens, dists)


LATENCIES = ("ttft_s", "tpot_s", "e2e_s")  # per-request latencies, in summary.json's order


def request_metrics(n: int, duration_s: float, output_tokens: int, dists: dict) -> dict:
    """The request-level metrics (vLLM names, summary.json's key order), built here only.

    dists: {latency name: (mean, p50, p99)} for each of LATENCIES (seconds; NaN when none).
    """
    s = {"num_requests": int(n), "duration_s": float(duration_s), "output_tokens": int(output_tokens),
         "output_throughput": _ratio(output_tokens, duration_s), "request_throughput": _ratio(n, duration_s)}
    for name in LATENCIES:
        s[f"mean_{name}"], s[f"p50_{name}"], s[f"p99_{name}"] = dists[name]
    return s


def _dist(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, p50, p99) of the non-NaN values (NaN when there are none)."""
    x = x[~np.isnan(x)]
    if not x.size:
        return float("nan"), float("nan"), float("nan")
    return float(np.mean(x)), float(np.percentile(x, 50)), float(np.percentile(x, 99))


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def summarize(records, stats: StepStats | None, duration_s: float, slo=None) -> dict:
    """The run's metrics as a flat dict (lists only for per_position_acceptance).

    `records`: RequestRecord list, dict of columns, or a RecordSink (exact, or
    streamed past its limit: then p50/p99 come from its 0.1% histograms).
    """
    if isinstance(records, RecordSink) and not records.exact:
        s = records.summary(duration_s)
        n_ok, n = records.slo_ok, records.count
        ok = _slo_ok(np.zeros(0), np.zeros(0), slo)
    else:
        c = _columns(records)
        ttft, tpot, e2e, out = _latencies(c)
        n = int(out.size)
        s = request_metrics(n, duration_s, int(out.sum()), {"ttft_s": _dist(ttft), "tpot_s": _dist(tpot), "e2e_s": _dist(e2e)})
        ok = _slo_ok(ttft, tpot, slo)
        n_ok = int(ok.sum()) if ok is not None else 0
    st = stats if stats is not None else StepStats()
    s.update(
        num_steps=st.num_steps,
        mean_batch=_ratio(st.request_steps, st.num_steps),
        acceptance_length=1.0 + _ratio(st.accepted_tokens, st.num_drafts),
        draft_acceptance_rate=_ratio(st.accepted_tokens, st.verified_tokens),
        per_position_acceptance=[_ratio(a, v) for a, v in zip(st.accepted_at.tolist(), st.verified_at.tolist())],
        drafted_tokens=st.drafted_tokens,
        verified_tokens=st.verified_tokens,
        accepted_tokens=st.accepted_tokens,
        wasted_tokens=st.verified_tokens - st.accepted_tokens,
        mean_budget=_ratio(st.verified_tokens, st.num_steps),
        tokens_per_step=_ratio(st.emitted_tokens, st.num_steps),
        target_time_s=st.target_s,
        draft_time_s=st.draft_s,
        prefill_time_s=st.prefill_s,
        prefill_passes=st.prefill_calls,
        mixed_prefills=st.mixed_prefills,
    )
    if ok is not None:
        s["goodput"] = _ratio(n_ok, duration_s)
        s["slo_attainment"] = _ratio(n_ok, n)
    return s
