"""The batched speculative-decoding loop (one Engine = one running batch).

Per step, for all running requests at once:
  1. K = policy.num_drafts(N); the draft proposes K tokens per request (its own KV),
  2. estimates a_ij from the chosen estimator; L = policy.allocate(estimates),
  3. ONE target forward over [last token, d_1..d_L_i] per request (ragged, masked),
  4. speculative acceptance; each request emits accepted + 1 tokens (capped at its length),
  5. both KV states keep only the accepted tokens (rejected slots are masked off).
Requests join (batched prefill, which emits their first token) and leave between steps.
Trace mode verifies all K drafts (ground truth) but emits only what the policy selected.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine import estimators as est
from engine import kv as kvm
from engine.models import forward, model_device
from engine.sampling import next_token, probs, sample, verify
from contract.trace import TraceRecord


@dataclass
class Seq:
    """One request while it runs."""

    id: int
    prompt: list[int]  # prompt token ids
    output_len: int  # tokens to generate
    rng: np.random.Generator  # this request's uniforms (same stream under every policy)
    arrival_s: float = 0.0  # seconds (run clock)
    draw_key: np.uint64 | None = None  # counter key of this request's uniforms (see draws)
    out: list[int] = field(default_factory=list)  # generated token ids
    pending_draft: list[int] = field(default_factory=list)  # emitted, not yet fed to the draft
    pending_feat: torch.Tensor | None = None  # [len(pending_draft), H] float32 target features (EAGLE draft)
    first_token_s: float = 0.0  # seconds
    finish_s: float = 0.0  # seconds

    @property
    def done(self) -> bool:
        return len(self.out) >= self.output_len

    @property
    def key(self) -> np.uint64:
        """This request's counter key, drawn once from its own stream self.rng."""
        if self.draw_key is None:
            self.draw_key = np.uint64(self.rng.integers(0, 2**63))
        return self.draw_key


_DEPTH, _KINDS = 1 << 20, 4  # counter = index * 2^20 + depth * 4 + kind


def draws(seqs: list[Seq], k: int, kind: int) -> np.ndarray:
    """U(0,1) [N, K] per (request, output token index, depth in the step, kind).

    Row i, column j: token index len(out) + j at depth j of this step; kind 0 = draft
    sample, 1 = its accept test, 2 = a target sample (prefill, bonus, correction).
    Stateless (counter-based on the request's key), so two policies whose steps start
    at the same index draw the same uniforms there, and no uniform is ever reused:
    a step starting at s touches (s + j, j), a later step s' > s never the same pair.
    """
    from contract.workload import acceptance_uniforms

    if not seqs:
        return np.zeros((0, k))
    keys = np.array([s.key for s in seqs], dtype=np.uint64)[:, None]
    start = np.array([len(s.out) for s in seqs], dtype=np.uint64)[:, None]
    j = np.arange(k, dtype=np.uint64)[None, :]
    counter = (start + j) * np.uint64(_DEPTH) + j * np.uint64(_KINDS) + np.uint64(kind)
    return acceptance_uniforms(0, 0, counter, key=keys)


@dataclass
class StepOut:
    batch: int  # requests in the step
    drafts: int  # K
    lengths: np.ndarray  # [N] int64 verified windows (the policy's selection)
    accepted: np.ndarray  # [N] int64 accepted drafts (within the selection)
    emitted: np.ndarray  # [N] int64 tokens emitted
    draft_s: float  # seconds drafting
    target_s: float  # seconds in the verification forward
    select_s: float  # seconds estimating + allocating
    finished: list  # Seqs that completed this step


class Engine:
    def __init__(self, target, draft, policy, *, temperature: float = 0.0, estimator: str = "auto",
                 trace: bool = False, accept_all: bool = False, clock=time.perf_counter,
                 calibration: bool = False, packed: bool = False, p_temperature: float | None = None):
        self.target, self.draft, self.policy = target, draft, policy
        self.temperature = float(temperature)
        self.estimator = est.resolve(estimator, self.temperature)
        self.calibrated = est.Calibrated()
        self.trace = trace or calibration  # verify all K drafts
        self.accept_all = accept_all  # negative control only
        self.p_temperature = p_temperature  # negative control only: acceptance rule's p at another temperature
        self.clock = clock
        self.packed = packed  # ragged forwards cost their real tokens (engine.models.forward)
        self.device = model_device(target)
        self.use_draft = policy.cfg.name != "none"
        # a draft that reads the target's hidden states: input at p is (x_p, f_{p-1}) (engine/smollm/eagle.py)
        self.eagle = self.use_draft and getattr(draft, "reads_target_features", False)
        self.seqs: list[Seq] = []
        self.tkv = kvm.empty(0, self.device)
        self.dkv = kvm.empty(0, self.device)
        self.step_index = 0
        self.trace_records: list[TraceRecord] = []
        self.calib: list[dict] = []  # per step: estimates per estimator + truth + mask (calibration)
        self.collect_calibration = calibration
        self.t0 = clock()

    def now(self) -> float:
        return self.clock() - self.t0

    def _fwd(self, model, *args, **kw):
        return forward(model, *args, packed=self.packed, **kw)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------ admission

    def admit(self, new: list[Seq]) -> float:
        """Batched prefill of new requests: emits each one's first token. Returns seconds spent."""
        if not new:
            return 0.0
        t0 = self.clock()
        prompts = [s.prompt for s in new]
        out = self._fwd(self.target, kvm.empty(len(new), self.device), prompts, last_only=True, hidden=self.eagle)
        logits, tkv = out[:2]
        u = torch.as_tensor(draws(new, 1, 2)[:, 0] if self.temperature > 0 else np.zeros(len(new)), device=self.device)
        first = next_token(logits, self.temperature, u).tolist()
        if self.use_draft:
            feats = None
            if self.eagle:  # f_{p-1} beside x_p; zeros before the first token; f_P goes with the first output
                hid = out[2]
                feats = [torch.cat([hid.new_zeros(1, hid.shape[-1]), hid[b, : len(p) - 1]]) for b, p in enumerate(prompts)]
                for b, (s, p) in enumerate(zip(new, prompts)):
                    s.pending_feat = hid[b, len(p) - 1: len(p)]
            _, dkv = self._fwd(self.draft, kvm.empty(len(new), self.device), prompts, logits=False, feats=feats)
            self.dkv = kvm.concat(self.dkv, dkv)
        self.tkv = kvm.concat(self.tkv, tkv)
        self._sync()
        now = self.now()
        for s, tok in zip(new, first):
            s.out.append(tok)
            s.pending_draft = [tok]
            s.first_token_s = now
            if s.done:
                s.finish_s = now
        self.seqs.extend(new)
        done = [s for s in new if s.done]
        if done:
            self._drop(done)
        return self.clock() - t0

    def _drop(self, done: list[Seq]) -> None:
        gone = {id(s) for s in done}
        keep = [i for i, s in enumerate(self.seqs) if id(s) not in gone]
        rows = torch.tensor(keep, dtype=torch.long)
        self.seqs = [self.seqs[i] for i in keep]
        self.tkv = kvm.compact(self.tkv, rows)
        if self.use_draft:
            self.dkv = kvm.compact(self.dkv, rows)

    def _maybe_compact(self) -> None:
        for name in ("tkv", "dkv"):
            st = getattr(self, name)
            if st.batch and st.width > 1.25 * int(st.length.max()) + 16:
                setattr(self, name, kvm.compact(st))

    # ------------------------------------------------------------ drafting

    def _draft(self, k: int, u: np.ndarray):
        """K drafts per request: tokens [N, K] int64, q [N, K, V] (sampling only, else None),
        and per-position features of the draft distribution (see estimators.features)."""
        toks, qs, feats = [], [], []
        entropy = self.estimator == "calibrated" or self.collect_calibration
        pending = [s.pending_draft for s in self.seqs]
        if self.eagle:  # fed with the target's features; later drafts with the draft's own (g)
            logits, self.dkv, hid = self._fwd(self.draft, self.dkv, pending, last_only=True,
                                            feats=[s.pending_feat for s in self.seqs], hidden=True)
            g = hid[torch.arange(len(pending)), torch.tensor([len(p) for p in pending]) - 1]
        else:
            logits, self.dkv = self._fwd(self.draft, self.dkv, pending, last_only=True)
        self.draft_start = self.dkv.width  # slots from here on hold d_1..d_{K-1}
        for j in range(k):
            q = probs(logits, self.temperature)
            if self.temperature <= 0:
                d = logits.argmax(dim=-1)
            else:
                d = sample(q, torch.as_tensor(u[:, j], device=q.device))
                qs.append(q)
            toks.append(d)
            feats.append(est.features(q, d, entropy))
            if j < k - 1 and self.eagle:
                logits, self.dkv, hid = self._fwd(self.draft, self.dkv, d[:, None].tolist(), last_only=True,
                                                feats=g[:, None], hidden=True)
                g = hid[:, 0]
            elif j < k - 1:
                logits, self.dkv = self._fwd(self.draft, self.dkv, d[:, None].tolist(), last_only=True)
        return torch.stack(toks, 1), (torch.stack(qs, 1) if qs else None), est.stack_features(feats)

    # ------------------------------------------------------------ one step

    def step(self) -> StepOut:
        n = len(self.seqs)
        k = self.policy.num_drafts(n) if self.use_draft else 0
        if self.temperature > 0:  # per (request, token index): drafts, accept tests, final tokens at t..t+K
            u = np.concatenate([draws(self.seqs, k, 0), draws(self.seqs, k, 1), draws(self.seqs, k + 1, 2)], axis=1)
        else:  # greedy needs no randomness
            u = np.zeros((n, 3 * k + 1))
        t0 = self.clock()
        estimates = None
        if k > 0:
            drafts, q, feats = self._draft(k, u[:, :k])
            self._sync()
        else:
            drafts = torch.zeros(n, 0, dtype=torch.long, device=self.device)
            q = None
        t1 = self.clock()
        if k > 0:
            estimates = est.estimate(self.estimator, feats, k, self.calibrated)
            usable = np.array([s.output_len - len(s.out) - 1 for s in self.seqs])  # drafts that can still be emitted
            if usable.min() < k:  # as in the simulator: no budget for drafts past a request's end
                estimates = np.where(np.arange(k)[None, :] < usable[:, None], estimates, np.nan)
            if self.policy.cfg.name == "oracle" or self.trace:
                lengths = None  # decided after verifying all K
                window = np.full(n, k, dtype=np.int64)
            else:
                lengths = self.policy.allocate(estimates)
                window = lengths
        else:
            lengths = window = np.zeros(n, dtype=np.int64)
        t2 = self.clock()
        # ---- verification: one target forward over [last token, d_1..d_window]
        last = [s.out[-1] for s in self.seqs]
        d_list = drafts.tolist()
        tokens = [[last[i]] + d_list[i][: int(window[i])] for i in range(n)]
        start = self.tkv.width
        out = self._fwd(self.target, self.tkv, tokens, hidden=self.eagle)
        logits, self.tkv = out[:2]
        thid = out[2] if self.eagle else None  # [N, 1 + window, H] target features of the fed tokens
        extra_select = 0.0
        if lengths is None:
            _, _, truth = verify(logits, drafts, q, torch.zeros(n, dtype=torch.long, device=self.device),
                                 self.temperature, torch.zeros(n, k), torch.zeros(n))
            ts = self.clock()
            truth_np = truth.double().cpu().numpy()
            truth_np = np.where(np.isnan(estimates), np.nan, truth_np)  # as the estimates: nothing past the end
            lengths = self.policy.allocate(estimates, truth=truth_np if self.policy.cfg.name == "oracle" else None)
            extra_select = self.clock() - ts
        len_t = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        u_acc = torch.as_tensor(u[:, k:2 * k] if k else np.zeros((n, 0)), device=self.device)
        u_fin = torch.as_tensor(u[:, 2 * k:], device=self.device)  # [N, K+1]: the final token lands at t + accepted
        accepted, new, truth = verify(logits, drafts, q, len_t, self.temperature, u_acc, u_fin, self.accept_all,
                                      p_temperature=self.p_temperature)
        self._sync()
        t3 = self.clock()
        # ---- bookkeeping: keep only accepted tokens in both KV states
        if int(window.max(initial=0)) > 0:  # else every fed token is kept
            kvm.keep_from(self.tkv, start, 1 + accepted)
        acc = accepted.cpu().numpy().astype(np.int64)
        new_l = new.tolist()
        if k > 0:  # an EAGLE draft refeeds the accepted drafts with the target's features instead
            keep = torch.zeros_like(accepted) if self.eagle else torch.clamp(accepted, max=k - 1)
            kvm.keep_from(self.dkv, self.draft_start, keep)
        now = self.now()
        emitted = np.zeros(n, dtype=np.int64)
        finished = []
        for i, s in enumerate(self.seqs):
            room = s.output_len - len(s.out)
            toks = (d_list[i][: acc[i]] + [new_l[i]])[:room]
            emitted[i] = len(toks)
            s.out.extend(toks)
            if self.eagle:  # pairs (d_1, f(last)), .., (d_a, f(d_{a-1})), (new, f(d_a))
                s.pending_draft = (d_list[i][: acc[i]] if k > 0 else s.pending_draft) + [new_l[i]]
                f = thid[i, : acc[i] + 1]
                s.pending_feat = f if k > 0 else torch.cat([s.pending_feat, f])
            elif k > 0:
                s.pending_draft = ([d_list[i][k - 1]] if acc[i] == k else []) + [new_l[i]]
            else:
                s.pending_draft = s.pending_draft + [new_l[i]]
            if s.done:
                s.finish_s = now
                finished.append(s)
        if k > 0:
            self._record(k, estimates, feats, truth, window, lengths, acc, emitted)
            if self.estimator == "calibrated" or self.collect_calibration:
                self.calibrated.observe(feats, k, np.asarray(lengths), acc)
        self.policy.observe(np.asarray(lengths), acc)
        self.step_index += 1
        if finished:
            self._drop(finished)
        self._maybe_compact()
        return StepOut(n, k, np.asarray(lengths, dtype=np.int64), acc, emitted, t1 - t0, t3 - t2,
                       (t2 - t1) + extra_select, finished)

    def _record(self, k, estimates, feats, truth, window, lengths, acc, emitted) -> None:
        if not self.trace:
            return
        truth_np = truth.double().cpu().numpy()
        greedy = self.temperature <= 0
        if self.collect_calibration:
            calib = {name: est.estimate(name, feats, k, self.calibrated) for name in est.NAMES}
            calib["truth"] = truth_np
            self.calib.append(calib)
        for i, s in enumerate(self.seqs):
            tr = truth_np[i, : int(window[i])].tolist()
            self.trace_records.append(TraceRecord(
                request=s.id, step=self.step_index, position=len(s.out) - int(emitted[i]),
                estimates=[float(x) for x in estimates[i]],
                accept_probs=None if greedy else tr,
                matches=[bool(x > 0.5) for x in tr] if greedy else None,
                selected=int(lengths[i]), accepted=int(acc[i]), emitted=int(emitted[i])))
