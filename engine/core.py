"""The batched speculative-decoding loop (one Engine = one running batch).

Per step (Engine.step), for all running requests at once:
  1. propose: K = policy.num_drafts(N); the draft proposes up to K tokens per request (its own KV;
     policy.early_stop: no deeper than any window can reach, theory.policy.Policy.windows_if_done),
  2. select: estimates a_ij from the chosen estimator; L = policy.allocate(estimates),
  3. verify: ONE target forward over [last token, d_1..d_L_i] per request (ragged, masked),
     then speculative acceptance,
  4. commit: both KV states keep only the accepted tokens (rejected slots are masked off); each
     request emits accepted + 1 tokens (capped at its length); the policy observes the step.
Requests join between steps and leave after them. A joining request's prefill (which emits its first
token) is either its own batched target + draft pass (admit, admission = "separate"), or, with
admission = "mixed" (vLLM's mixed batch), its prompt rides in the next step's verification pass
(join) and its draft prefill in the step after's first draft pass. Both KV caches are static
(engine/slots.py): a request holds one slot in each from join to finish; rejected drafts roll back
by length.
Trace mode verifies all K drafts (ground truth) but emits only what the policy selected.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine import estimators as est
from engine import slots as slm
from engine.forward import forward, model_device
from engine.sampling import next_token, probs, sample, verify
from contract.trace import TraceRecord
from contract.workload import acceptance_uniforms


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
    slot: int = -1  # its slot in both KV caches while it runs (engine.slots), else -1

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
    if not seqs:
        return np.zeros((0, k))
    keys = np.array([s.key for s in seqs], dtype=np.uint64)[:, None]
    start = np.array([len(s.out) for s in seqs], dtype=np.uint64)[:, None]
    j = np.arange(k, dtype=np.uint64)[None, :]
    counter = (start + j) * np.uint64(_DEPTH) + j * np.uint64(_KINDS) + np.uint64(kind)
    return acceptance_uniforms(0, 0, counter, key=keys)


def narrow_uniforms(u: np.ndarray, k: int, d: int) -> np.ndarray:
    """A step's uniforms [N, 3K+1] (Engine._uniforms) for D <= K drafted depths: [N, 3D+1], each
    column still the one of its (token index, depth, kind), so early-stopped drafting tests and
    samples with the uniforms full drafting would."""
    return np.concatenate([u[:, :d], u[:, k:k + d], u[:, 2 * k:2 * k + d + 1]], axis=1)


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


@dataclass
class Verified:
    """What one verification pass decided (Engine._verify)."""

    drafts: list  # [N][K] int draft tokens (as lists)
    start: torch.Tensor  # [N] int64 target KV lengths before the pass (its new tokens start here)
    lengths: np.ndarray  # [N] int verified windows the policy selected (StepOut.lengths)
    accepted: torch.Tensor  # [N] int64 accepted drafts (within the selection)
    new: torch.Tensor  # [N] int64 the token after the accepted drafts (bonus or correction)
    truth: torch.Tensor  # [N, max window] per draft: greedy match (float32) / acceptance probability (float64)
    features: torch.Tensor | None  # [N, 1 + window, H] float32 target features of the fed tokens (EAGLE), else None
    select_s: float  # seconds allocating after the pass (oracle / trace mode), else 0
    joined: tuple | None = None  # joining requests' (logits [J, V] float32, features [J, T, H] or None)


class Engine:
    def __init__(self, target, draft, policy, *, temperature: float = 0.0, estimator: str = "auto",
                 trace: bool = False, accept_all: bool = False, clock=time.perf_counter,
                 calibration: bool = False, packed: bool = False, p_temperature: float | None = None,
                 slots: int = 8, capacity: int = 256, mixed: bool = False, compact: bool = True):
        """slots / capacity: the static KV caches' size (requests at once x positions per request:
        prompt + output + the largest verification window); they grow (one copy) if a run needs more.
        mixed: join() may queue requests whose prefill rides in the next step's verification pass.
        compact: keep the running rows the dense slot span 0..n-1 when requests finish (_drop; False,
        for comparison: holes stay until a join fills them, and passes compute the empty rows)."""
        self.target, self.draft, self.policy = target, draft, policy
        self.temperature = float(temperature)
        self.estimator = est.resolve(estimator, self.temperature)
        self.calibrated = est.Calibrated()
        self.trace = trace or calibration  # verify all K drafts
        self.accept_all = accept_all  # negative control only
        self.p_temperature = p_temperature  # negative control only: acceptance rule's p at another temperature
        self.clock = clock
        self.packed = packed  # ragged forwards cost their real tokens (engine.forward.forward)
        self.device = model_device(target)
        self.use_draft = policy.speculates
        # a draft that reads the target's hidden states: input at p is (x_p, f_{p-1}) (engine/smollm/eagle.py)
        self.eagle = self.use_draft and getattr(draft, "reads_target_features", False)
        self.seqs: list[Seq] = []
        self.mixed = mixed
        self.compact = compact
        self.joining: list[Seq] = []  # joined, prefill in the next step's verification pass (mixed)
        self.joined_tokens = 0  # prompt tokens prefilled inside verification passes so far
        self.tkv = slm.SlotKV(slots, capacity, self.device)
        self.dkv = slm.SlotKV(slots, capacity, self.device)
        self.step_index = 0
        self.trace_records: list[TraceRecord] = []
        self.calib: list[dict] = []  # per step: estimates per estimator + truth + mask (calibration)
        self.collect_calibration = calibration
        self.early_check_s = 0.0  # this step's seconds in the early stop's checks (counted as selection)
        self.t0 = clock()

    def now(self) -> float:
        return self.clock() - self.t0

    def _fwd(self, model, *args, slots=None, **kw):
        """forward() on the running requests' slots (or the given ones)."""
        if slots is None:
            slots = [s.slot for s in self.seqs]
        return forward(model, *args, packed=self.packed, slots=slots, **kw)

    def _slot_tensor(self) -> torch.Tensor:
        return torch.tensor([s.slot for s in self.seqs], dtype=torch.long, device=self.device)

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
        slots = self._take_slots(new)
        out = self._fwd(self.target, self.tkv, prompts, last_only=True, hidden=self.eagle, slots=slots)
        logits = out[0]
        u = torch.as_tensor(draws(new, 1, 2)[:, 0] if self.temperature > 0 else np.zeros(len(new)), device=self.device)
        first = next_token(logits, self.temperature, u).tolist()
        if self.use_draft:
            feats = None
            if self.eagle:  # f_{p-1} beside x_p; zeros before the first token; f_P goes with the first output
                hid = out[2]
                feats = [torch.cat([hid.new_zeros(1, hid.shape[-1]), hid[b, : len(p) - 1]]) for b, p in enumerate(prompts)]
                for b, (s, p) in enumerate(zip(new, prompts)):
                    s.pending_feat = hid[b, len(p) - 1: len(p)]
            self._fwd(self.draft, self.dkv, prompts, logits=False, feats=feats, slots=slots)
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

    def _take_slots(self, new: list[Seq]) -> list[int]:
        """The lowest free slots, one per new request (in both caches)."""
        for s, slot in zip(new, slm.lowest_free({s.slot for s in self.seqs + self.joining}, len(new))):
            s.slot = slot
        slots = [s.slot for s in new]
        for cache in (self.tkv, self.dkv):
            cache.ensure(max(slots) + 1, cache.capacity)
        return slots

    def join(self, new: list[Seq]) -> None:
        """Mixed admission: the new requests' prompts ride in the next step's verification pass (which
        emits their first tokens); their draft prefill in the step after's first draft pass."""
        if not self.mixed or not self.seqs:
            raise RuntimeError("Engine.join: needs mixed=True and a running request (else admit)")
        self._take_slots(new)
        self.joining.extend(new)

    def _joined(self, logits: torch.Tensor, hid: torch.Tensor | None) -> list[Seq]:
        """The joining requests' first tokens from their rows of the verification pass (logits [J, V]
        at each prompt's last token; hid [J, T, H] features, EAGLE); they join self.seqs. Returns those
        already done."""
        new, self.joining = self.joining, []
        u = torch.as_tensor(draws(new, 1, 2)[:, 0] if self.temperature > 0 else np.zeros(len(new)), device=self.device)
        first = next_token(logits, self.temperature, u).tolist()
        now = self.now()
        for b, (s, tok) in enumerate(zip(new, first)):
            s.out.append(tok)
            s.pending_draft = s.prompt + [tok]  # the draft's prefill goes with its next pass
            if self.eagle:  # f_{p-1} beside x_p: zeros before the first token, f_P beside it
                f = hid[b, : len(s.prompt)]
                s.pending_feat = torch.cat([f.new_zeros(1, f.shape[-1]), f])
            s.first_token_s = now
            if s.done:
                s.finish_s = now
            self.joined_tokens += len(s.prompt)
        self.seqs.extend(new)
        return [s for s in new if s.done]

    def _drop(self, done: list[Seq]) -> None:
        """Finished requests free their slots; then the running requests of the highest slots move into
        the holes (one request's KV copied per move), so the rows stay the dense span 0..n-1 (a pass over a
        span with holes computes its empty rows too)."""
        gone = {id(s) for s in done}
        for s in done:
            self.tkv.free(s.slot)
            self.dkv.free(s.slot)
            s.slot = -1
        self.seqs = [s for s in self.seqs if id(s) not in gone]
        if self.joining or not self.compact:  # joiners hold slots reserved for the next pass: leave them be
            return
        n = len(self.seqs)
        holes = sorted(set(range(n)) - {s.slot for s in self.seqs})
        movers = sorted((s for s in self.seqs if s.slot >= n), key=lambda s: s.slot)
        for hole, s in zip(holes, movers):
            self.tkv.move(s.slot, hole)
            self.dkv.move(s.slot, hole)
            s.slot = hole

    # ------------------------------------------------------------ drafting

    def _draft(self, k: int, u: np.ndarray, depth: int, usable: np.ndarray):
        """Up to `depth` <= K drafts per request: tokens [N, D] int64, q [N, D, V] (sampling only, else
        None), per-position features of the draft distribution (see estimators.features), and
        (estimates [N, D], windows [N]) when a prefix-decided policy stopped at D < depth because no
        window reaches D (theory.policy.Policy.windows_if_done: the windows of all K), else None.
        usable [N]: drafts each request can still emit (_usable)."""
        toks, qs, feats = [], [], []
        check = self._stops_early(k) and self.policy.checks_depth
        early = None
        entropy = self.estimator == "calibrated" or self.collect_calibration
        pending = [s.pending_draft for s in self.seqs]
        if self.eagle:  # fed with the target's features; later drafts with the draft's own (g)
            logits, self.dkv, hid = self._fwd(self.draft, self.dkv, pending, last_only=True,
                                            feats=[s.pending_feat for s in self.seqs], hidden=True)
            g = hid[torch.arange(len(pending)), torch.tensor([len(p) for p in pending]) - 1]
        else:
            logits, self.dkv = self._fwd(self.draft, self.dkv, pending, last_only=True)
        self.draft_start = self.dkv.length[self._slot_tensor()]  # [N] positions from here on hold d_1..d_{D-1}
        for j in range(depth):
            q = probs(logits, self.temperature)
            if self.temperature <= 0:
                d = logits.argmax(dim=-1)
            else:
                d = sample(q, torch.as_tensor(u[:, j], device=q.device))
                qs.append(q)
            toks.append(d)
            feats.append(est.features(q, d, entropy))
            if j < depth - 1 and check:
                ts = self.clock()
                early = self._windows_if_done(feats, k, usable)
                self.early_check_s += self.clock() - ts
                if early is not None:
                    break
            if j < depth - 1 and self.eagle:
                logits, self.dkv, hid = self._fwd(self.draft, self.dkv, d[:, None].tolist(), last_only=True,
                                                feats=g[:, None], hidden=True)
                g = hid[:, 0]
            elif j < depth - 1:
                logits, self.dkv = self._fwd(self.draft, self.dkv, d[:, None].tolist(), last_only=True)
        return torch.stack(toks, 1), (torch.stack(qs, 1) if qs else None), est.stack_features(feats), early

    def _stops_early(self, k: int) -> bool:
        """Draft depth by depth and stop where no window can reach deeper (not in trace mode, where
        all K are verified; an oracle is not prefix-decided)."""
        return k > 0 and self.policy.stops_early and not self.trace

    def _depth_cap(self, k: int, usable: np.ndarray) -> int:
        """Depths worth drafting: K, or for a prefix-decided policy no deeper than a request can still emit."""
        return min(k, int(usable.max(initial=0))) if self._stops_early(k) else k

    def _usable(self) -> np.ndarray:
        """[N] int64 drafts each request can still emit (as the simulator: no budget past its end)."""
        return np.array([s.output_len - len(s.out) - 1 for s in self.seqs], dtype=np.int64)

    def _estimates(self, feats: dict, k: int, usable: np.ndarray) -> np.ndarray:
        """float64 [N, D] acceptance estimates of the D drafted depths (K = k), NaN past each request's end."""
        estimates = est.estimate(self.estimator, feats, k, self.calibrated)
        d = estimates.shape[1]
        if usable.min() < d:
            estimates = np.where(np.arange(d)[None, :] < usable[:, None], estimates, np.nan)
        return estimates

    def _windows_if_done(self, feats: list, k: int, usable: np.ndarray):
        """(estimates [N, D], windows [N]) once the D drafted depths decide the windows, else None."""
        valid = np.minimum(usable, k)
        if not self.policy.may_stop(len(feats), valid):
            return None
        estimates = self._estimates(est.stack_features(feats), k, usable)
        lengths = self.policy.windows_if_done(estimates, k, valid)
        return None if lengths is None else (estimates, lengths)

    # ------------------------------------------------------------ one step

    def step(self) -> StepOut:
        """One speculative step for every running request: propose, select, verify, commit."""
        n = len(self.seqs)
        k = self.policy.num_drafts(n) if self.use_draft else 0
        u = self._uniforms(n, k)
        usable = self._usable() if k else None  # drafts each request can still emit
        self.early_check_s = 0.0  # selection work done while drafting (_draft)
        t0 = self.clock()
        drafts, q, feats, early = self._propose(n, k, u[:, :k], usable)
        t1 = self.clock()
        d = drafts.shape[1]  # drafted depth D <= K (a prefix-decided policy stops early)
        if d < k:
            u = narrow_uniforms(u, k, d)
        if early is not None:  # the windows were decided while drafting
            estimates, lengths, window = early[0], early[1], early[1]
        else:
            estimates, lengths, window = self._select(n, k, feats, usable)
        t2 = self.clock()
        v = self._verify(d, drafts, q, estimates, lengths, window, u)
        t3 = self.clock()
        acc, emitted, finished = self._commit(d, window, v)
        self._observe(k, estimates, feats, window, v, acc, emitted)
        if v.joined is not None:
            finished = finished + self._joined(*v.joined)
        self._retire(finished)
        check_s = self.early_check_s
        return StepOut(n, d, np.asarray(v.lengths, dtype=np.int64), acc, emitted, t1 - t0 - check_s, t3 - t2,
                       (t2 - t1) + v.select_s + check_s, finished)

    def _uniforms(self, n: int, k: int) -> np.ndarray:
        """U(0,1) [N, 3K+1]: draft samples [:K], accept tests [K:2K], target samples [2K:] at
        token indices t..t+K (per request and token index, see draws); zeros when greedy."""
        if self.temperature > 0:
            return np.concatenate([draws(self.seqs, k, 0), draws(self.seqs, k, 1), draws(self.seqs, k + 1, 2)], axis=1)
        return np.zeros((n, 3 * k + 1))  # greedy needs no randomness

    def _propose(self, n: int, k: int, u: np.ndarray, usable: np.ndarray | None):
        """The draft's D <= K tokens per request: (drafts [N, D] int64, q [N, D, V] or None, features,
        the early stop's (estimates, windows) or None); see _draft."""
        depth = self._depth_cap(k, usable) if k else 0
        if depth == 0:
            return torch.zeros(n, 0, dtype=torch.long, device=self.device), None, None, None
        out = self._draft(k, u, depth, usable)
        self._sync()
        return out

    def _select(self, n: int, k: int, feats, usable: np.ndarray | None):
        """(estimates [N, K] float64 or None, lengths [N] int64 the policy selected, or None when it
        decides after verifying all K (oracle, trace mode), window [N] int64 drafts to verify).
        Depths not drafted (none can be emitted, _depth_cap) are NaN, as the K the policy plans with."""
        if feats is None:  # K = 0, or no request can emit a draft
            lengths = window = np.zeros(n, dtype=np.int64)
            return None, lengths, window
        estimates = self._estimates(feats, k, usable)
        if estimates.shape[1] < k:
            estimates = np.pad(estimates, ((0, 0), (0, k - estimates.shape[1])), constant_values=np.nan)
        if self.policy.needs_truth or self.trace:
            return estimates, None, np.full(n, k, dtype=np.int64)  # lengths decided after verifying all K
        lengths = self.policy.allocate(estimates)
        return estimates, lengths, lengths

    def _verify(self, k, drafts, q, estimates, lengths, window, u) -> Verified:
        """ONE target forward over [last token, d_1..d_window] per request, then the acceptance rule
        on the selected lengths (decided here from the truth when _select left them to it)."""
        n = len(self.seqs)
        d_list = drafts.tolist()
        tokens = [[s.out[-1]] + d_list[i][: int(window[i])] for i, s in enumerate(self.seqs)]
        start = self.tkv.length[self._slot_tensor()]
        if self.joining:  # mixed batch: the joining prompts ride along, logits at their last tokens only
            w = 1 + int(window.max(initial=0))
            out = self._fwd(self.target, self.tkv, tokens + [s.prompt for s in self.joining], hidden=self.eagle,
                            slots=[s.slot for s in self.seqs + self.joining],
                            heads=[len(x) for x in tokens] + [1] * len(self.joining))
            joined = (out[0][n:, 0], out[2][n:] if self.eagle else None)
            out = (out[0][:n, :w], out[1]) + ((out[2][:n, :w],) if self.eagle else ())
        else:
            joined = None
            out = self._fwd(self.target, self.tkv, tokens, hidden=self.eagle)
        logits, self.tkv = out[:2]
        thid = out[2] if self.eagle else None  # [N, 1 + window, H] target features of the fed tokens
        select_s = 0.0
        if lengths is None:
            lengths, select_s = self._select_with_truth(logits, drafts, q, estimates)
        len_t = torch.as_tensor(lengths, dtype=torch.long, device=self.device)
        u_acc = torch.as_tensor(u[:, k:2 * k] if k else np.zeros((n, 0)), device=self.device)
        u_fin = torch.as_tensor(u[:, 2 * k:], device=self.device)  # [N, K+1]: the final token lands at t + accepted
        accepted, new, truth = verify(logits, drafts, q, len_t, self.temperature, u_acc, u_fin, self.accept_all,
                                      p_temperature=self.p_temperature)
        self._sync()
        return Verified(d_list, start, lengths, accepted, new, truth, thid, select_s, joined)

    def _select_with_truth(self, logits, drafts, q, estimates):
        """The policy's lengths once all K drafts are verified (the oracle reads the truth).
        Returns (lengths [N] int64, seconds allocating)."""
        n, k = drafts.shape
        _, _, truth = verify(logits, drafts, q, torch.zeros(n, dtype=torch.long, device=self.device),
                             self.temperature, torch.zeros(n, k), torch.zeros(n))
        ts = self.clock()
        truth_np = truth.double().cpu().numpy()
        truth_np = np.where(np.isnan(estimates), np.nan, truth_np)  # as the estimates: nothing past the end
        lengths = self.policy.allocate(estimates, truth=truth_np if self.policy.needs_truth else None)
        return lengths, self.clock() - ts

    def _commit(self, k: int, window: np.ndarray, v: Verified):
        """Keep only the accepted tokens in both KV states; each request emits accepted + 1 tokens
        (capped at its length). Returns (accepted [N] int64, emitted [N] int64, finished Seqs)."""
        slots = self._slot_tensor()
        if int(window.max(initial=0)) > 0:  # else every fed token is kept
            self.tkv.rollback(slots, v.start + 1 + v.accepted)
        acc = v.accepted.cpu().numpy().astype(np.int64)
        new_l = v.new.tolist()
        if k > 0:  # an EAGLE draft refeeds the accepted drafts with the target's features instead
            keep = torch.zeros_like(v.accepted) if self.eagle else torch.clamp(v.accepted, max=k - 1)
            self.dkv.rollback(slots, self.draft_start + keep)
        now = self.now()
        emitted = np.zeros(len(self.seqs), dtype=np.int64)
        finished = []
        for i, s in enumerate(self.seqs):
            toks = (v.drafts[i][: acc[i]] + [new_l[i]])[: s.output_len - len(s.out)]
            emitted[i] = len(toks)
            s.out.extend(toks)
            self._feed_draft(s, k, v.drafts[i], acc[i], new_l[i], v.features[i] if self.eagle else None)
            if s.done:
                s.finish_s = now
                finished.append(s)
        return acc, emitted, finished

    def _feed_draft(self, s: Seq, k: int, drafts: list[int], a, new: int, thid) -> None:
        """What the draft reads next step: the emitted tokens it has not fed yet (for an EAGLE
        draft with the target's features beside them; thid [1 + window, H])."""
        if self.eagle:  # pairs (d_1, f(last)), .., (d_a, f(d_{a-1})), (new, f(d_a))
            s.pending_draft = (drafts[:a] if k > 0 else s.pending_draft) + [new]
            f = thid[: a + 1]
            s.pending_feat = f if k > 0 else torch.cat([s.pending_feat, f])
        elif k > 0:
            s.pending_draft = ([drafts[k - 1]] if a == k else []) + [new]
        else:
            s.pending_draft = s.pending_draft + [new]

    def _observe(self, k, estimates, feats, window, v: Verified, acc, emitted) -> None:
        """Trace records, calibration data and the policy's own feedback for this step."""
        if feats is not None:
            self._record(k, estimates, feats, v.truth, window, v.lengths, acc, emitted)
            if self.estimator == "calibrated" or self.collect_calibration:
                self.calibrated.observe(feats, k, np.asarray(v.lengths), acc)
        self.policy.observe(np.asarray(v.lengths), acc)
        self.step_index += 1

    def _retire(self, finished: list[Seq]) -> None:
        """Finished requests leave the batch (their slots are freed)."""
        if finished:
            self._drop(finished)

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
