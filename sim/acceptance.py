"""Acceptance models: the true acceptance of every draft and the draft's estimate of it.

    acc = make_acceptance(cfg)                  # from cfg.acceptance, cfg.seed, server.max_batch slots
    acc.admit(slots, ids, out_len)              # at admission: fill the slots' per-position draws
    truth, est, passed = acc.step(slots, pos, K)   # each [N, K]

For request ids[i] with pos[i] output tokens already emitted, draft j (0-based)
lands on output position pos[i] + j. truth[i, j] is its true conditional
acceptance probability (given drafts 0..j-1 passed), est[i, j] the estimate the
policy ranks by, passed[i, j] whether it passes: U(seed, id, position) <
truth, with U from contract.workload.acceptance_uniforms. Because U depends only
on (request, output position), every policy sees the same draws (common random
numbers), whatever windows it verifies. All per-position draws of a request
are made at admission into per-slot buffers ([max_batch, longest output]), so
a step is a handful of gathers.

Models (acceptance.model):
  iid      truth = alpha * decay^j
  beta     per request alpha_i ~ Beta(beta_a, beta_b); truth = alpha_i * decay^j
  mixture  easy_alpha or hard_alpha (times decay^j), chosen per request
           (regime="request", easy with probability easy_frac) or per segment
           of segment_len output tokens (regime="segment"; each request gets a
           random phase, each segment its own easy/hard draw)
  trace    replay an engine trace (contract/trace.py): sim request i plays trace
           request (i mod #trace requests); per output position the recorded
           estimate and truth (accept_probs, or matches as 1/0) of the first
           record covering it; positions past the recording wrap around.
Estimates (acceptance.estimate; not for trace, whose estimates are recorded):
  perfect         est = truth
  noisy           logit(est) = logit(truth) + noise * z, z ~ N(0,1) per (request, position)
  overconfident   logit(est) = logit(truth) * (1 + noise)    (too extreme)
  underconfident  logit(est) = logit(truth) / (1 + noise)    (too timid)
"""
from __future__ import annotations

import numpy as np

from contract.config import ConfigError
from contract.workload import (STREAM_ACCEPT, STREAM_ATTR, STREAM_NOISE, STREAM_NOISE2, STREAM_SEGMENT,
                               acceptance_uniforms, hash_key)

_EPS = 1e-6


def logit(p):
    return np.log(p / (1.0 - p))


def expit(x):
    return 1.0 / (1.0 + np.exp(-x))


class Acceptance:
    """Per-slot buffers of each running request's per-position draws, filled at admission."""

    def __init__(self, cfg, seed: int, slots: int):
        self.c = cfg
        self.seed = seed
        self.k_acc = hash_key(seed, STREAM_ACCEPT)
        self.k_attr = hash_key(seed, STREAM_ATTR)
        self.k_seg = hash_key(seed, STREAM_SEGMENT)
        self.k_noise = hash_key(seed, STREAM_NOISE)
        self.k_noise2 = hash_key(seed, STREAM_NOISE2)
        self.decay_pow = np.ones(0)
        self.trace = _load_trace(cfg.trace) if cfg.model == "trace" else None
        self.noisy = cfg.model != "trace" and cfg.estimate == "noisy" and cfg.noise > 0
        self._keys = np.array([self.k_acc, self.k_noise, self.k_noise2] if self.noisy else [self.k_acc], np.uint64)
        # without per-window decay a position's truth, estimate and outcome do not depend on
        # where the window starts: precompute them at admission, and run lengths of passes
        self.static = cfg.model == "trace" or cfg.decay == 1.0
        self.slots = slots
        self.width = 0
        self._alloc(256)

    def _alloc(self, width: int) -> None:
        """(Re)size the [slots, width] buffers, keeping their contents."""
        old = (self.width, *(getattr(self, n, None) for n in ("u", "base", "z", "est", "run")))
        self.width = width
        self.u = np.zeros((self.slots, width))  # U(0,1) per output position
        self.base = np.zeros((self.slots, width))  # truth before per-window decay
        self.z = np.zeros((self.slots, width), np.float32) if self.noisy else None  # N(0,1) estimate noise
        self.est = np.zeros((self.slots, width)) if self.static else None  # estimates (decay 1 or trace)
        self.run = np.zeros((self.slots, width), np.int64) if self.static else None  # passes in a row from here
        if old[0]:
            w = old[0]
            for dst, src in zip((self.u, self.base, self.z, self.est, self.run), old[1:]):
                if dst is not None:
                    dst[:, :w] = src

    # ------------------------------------------------------------ admission
    def prefetch(self, ids: np.ndarray, out_len: np.ndarray) -> None:
        """Draw everything for a block of requests (e.g. the next few in the queue) at once.

        Ragged: only positions 0..out_len-1 of each request, as flat arrays, so a
        block costs one pass over its tokens and a fixed number of numpy calls.
        """
        c = self.c
        n = ids.size
        lens = out_len.astype(np.int64)
        total = int(lens.sum())
        ends = np.cumsum(lens)
        off = ends - lens
        rid = np.repeat(np.arange(n), lens)  # request of each flat element
        flat = np.arange(total)
        pos = flat - off[rid]
        rep_ids = ids[rid]
        h = acceptance_uniforms(self.seed, rep_ids[:, None], pos[:, None], key=self._keys)  # [total, 1 or 3]
        u = h[:, 0]
        z = np.sqrt(-2.0 * np.log1p(-h[:, 1])) * np.cos(2.0 * np.pi * h[:, 2]) if self.noisy else None  # Box-Muller
        est = None
        if c.model == "trace":
            base, est = self.trace.lookup_flat(rep_ids, pos)
        elif c.model == "iid":
            base = np.full(total, c.alpha)
        else:
            a = acceptance_uniforms(self.seed, ids, 0, key=self.k_attr)  # one attribute draw per request
            if c.model == "beta":
                from scipy.special import betaincinv  # only this model needs scipy

                base = betaincinv(c.beta_a, c.beta_b, a)[rid]
            elif c.regime == "request":
                base = np.where(a < c.easy_frac, c.easy_alpha, c.hard_alpha)[rid]
            else:  # segments of segment_len tokens with a random phase per request
                seg = (pos + np.floor(a * c.segment_len).astype(np.int64)[rid]) // int(c.segment_len)
                easy = acceptance_uniforms(self.seed, rep_ids, seg, key=self.k_seg) < c.easy_frac
                base = np.where(easy, c.easy_alpha, c.hard_alpha)
        blk = {"ids": ids.copy(), "off": off, "lens": lens, "u": u, "base": base, "z": z}
        if self.static:
            blk["est"] = est if est is not None else self._estimate(base, z)
            # run[t] = passes in a row from position t (the next failure, or the end, minus t)
            f = np.where(u < base, ends[rid], flat)
            blk["run"] = np.minimum.accumulate(f[::-1])[::-1] - flat
        self.block = blk

    def covers(self, ids: np.ndarray) -> bool:
        """Whether the prefetched block holds all of these requests."""
        b = getattr(self, "block", None)
        if b is None or b["ids"].size == 0:
            return False
        i = np.searchsorted(b["ids"], ids)
        return bool(np.all(i < b["ids"].size) and np.array_equal(b["ids"][np.minimum(i, b["ids"].size - 1)], ids))

    def admit(self, slots: np.ndarray, ids: np.ndarray, out_len: np.ndarray) -> None:
        """Copy newly admitted requests' draws into their slots (prefetching them if needed)."""
        if not self.covers(ids):
            self.prefetch(ids, out_len)
        b = self.block
        need = int(out_len.max())
        if need > self.width:
            self._alloc(max(need, 2 * self.width))
        names = ["u", "base"] + (["est", "run"] if self.static else ["z"] if self.noisy else [])
        for slot, j in zip(slots.tolist(), np.searchsorted(b["ids"], ids).tolist()):
            o, n = int(b["off"][j]), int(b["lens"][j])
            for name in names:
                getattr(self, name)[slot, :n] = b[name][o : o + n]
            if self.static:
                self.run[slot, n:] = 0

    def _decay(self, k: int) -> np.ndarray:
        if self.decay_pow.size != k:
            self.decay_pow = self.c.decay ** np.arange(k, dtype=np.float64)
        return self.decay_pow

    def index(self, slots: np.ndarray, pos: np.ndarray, k: int) -> np.ndarray:
        """Flat buffer index [N, K] of the drafts landing on positions pos + 0..K-1."""
        return np.minimum(pos[:, None] + np.arange(k), self.width - 1) + (slots * self.width)[:, None]

    def estimates(self, idx: np.ndarray) -> np.ndarray:
        """est [N, K] at flat indices (fast path for the policy; static models only)."""
        return self.est.ravel()[idx]

    def accepted(self, slots: np.ndarray, pos: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Leading passed drafts within each window (static models: one gather)."""
        return np.minimum(lengths, self.run.ravel()[slots * self.width + pos])

    def step(self, slots: np.ndarray, pos: np.ndarray, k: int):
        """truth, est, passed, each [N, K], for drafts landing on positions pos + 0..K-1."""
        idx = self.index(slots, pos, k)
        truth = self.base.ravel()[idx]
        if self.static:
            return truth, self.est.ravel()[idx], self.u.ravel()[idx] < truth
        truth = truth * self._decay(k)
        return truth, self._estimate(truth, self.z.ravel()[idx] if self.noisy else None), self.u.ravel()[idx] < truth

    def _estimate(self, truth, z):
        c = self.c
        if c.estimate == "perfect" or c.noise == 0.0:
            return truth
        lt = logit(np.clip(truth, _EPS, 1 - _EPS))
        if c.estimate == "noisy":
            return expit(lt + c.noise * z)
        if c.estimate == "overconfident":
            return expit(lt * (1.0 + c.noise))
        return expit(lt / (1.0 + c.noise))


class _Trace:
    """Per trace request, flat per-position (estimate, truth) arrays."""

    def __init__(self, est: np.ndarray, truth: np.ndarray, start: np.ndarray, length: np.ndarray):
        self.est, self.truth, self.start, self.length = est, truth, start, length

    def lookup_flat(self, ids, positions):
        """(truth, estimate) at each (request id, output position); equal-length 1-D arrays."""
        r = ids % self.start.size
        flat = self.start[r] + positions % self.length[r]
        return self.truth[flat], self.est[flat]


def _load_trace(path: str) -> _Trace:
    from contract.trace import by_request, read_trace

    try:
        _, records = read_trace(path)
    except ValueError as err:
        raise ConfigError(f"acceptance.trace: {err}") from None
    if not records:
        raise ConfigError(f"acceptance.trace: {path!r} holds no records")
    ests, truths, starts, lengths = [], [], [], []
    offset = 0
    for _, recs in sorted(by_request(records).items()):
        n = max(r.position + len(r.estimates) for r in recs)
        e = np.full(n, np.nan)
        t = np.full(n, np.nan)
        for r in recs:
            try:
                tr = np.asarray(r.truth(), dtype=np.float64)
            except ValueError as err:
                raise ConfigError(f"acceptance.trace: {err}") from None
            es = np.asarray(r.estimates, dtype=np.float64)
            m = min(es.size, tr.size)
            sl = slice(r.position, r.position + m)
            fresh = np.isnan(e[sl])
            e[sl] = np.where(fresh, es[:m], e[sl])
            t[sl] = np.where(fresh, tr[:m], t[sl])
        ok = np.isfinite(e) & np.isfinite(t)
        if not ok.any():
            continue
        # positions never recorded borrow the request's mean
        e = np.where(ok, e, np.nanmean(np.where(ok, e, np.nan)))
        t = np.where(ok, t, np.nanmean(np.where(ok, t, np.nan)))
        ests.append(np.clip(e, 0, 1))
        truths.append(np.clip(t, 0, 1))
        starts.append(offset)
        lengths.append(n)
        offset += n
    if not ests:
        raise ConfigError(f"acceptance.trace: {path!r} has no usable estimates/truth")
    return _Trace(np.concatenate(ests), np.concatenate(truths), np.array(starts), np.array(lengths))


def make_acceptance(cfg, slots: int | None = None) -> Acceptance:
    """Build from a full Config (uses cfg.acceptance, cfg.seed; slots default server.max_batch)."""
    a = cfg.acceptance
    if a.model == "trace" and not a.trace:
        raise ConfigError("acceptance.trace: model 'trace' needs a trace file path")
    return Acceptance(a, cfg.seed, slots or cfg.server.max_batch)
