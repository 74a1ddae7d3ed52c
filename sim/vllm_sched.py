"""server.scheduler = "vllm": a replica whose steps follow vLLM V1's scheduler (v1/core/sched/scheduler.py).

Per step a token budget B = server.max_num_batched_tokens is handed out in this order:
  1. RUNNING requests, in admission order: a decoding request asks for 1 + L_i tokens (its
     bonus/correction token plus the L_i drafts the policy verifies; drafts past the budget are
     cut, as vLLM trims spec_token_ids), a request part-way through its prompt asks for the rest
     of the prompt; each gets min(ask, budget left); one that gets 0 sits the step out;
  2. WAITING requests that have arrived, FCFS, while fewer than server.max_batch (vLLM's
     max_num_seqs) are running and budget is left: a prompt of P tokens takes min(P, budget left)
     (server.chunked_prefill = true) or waits whole for a later step when P > budget left (false).
Prefill chunks and decodes share one target pass. The step that computes a prompt's last token
emits the request's FIRST output token (vLLM samples it there); from the next step on the request
decodes: K = policy.num_drafts(decoding requests), windows L = policy.allocate(...), emits
accepted + 1. KV-cache capacity (preemption) and prefix caching are not modelled.

Step cost (cost model from sim/cost.py, in its verify layout):
  target  = cost.target_s(scheduled requests, T, context), T = decode tokens (decoders + their
            verified drafts, layout-aware) + prefill-chunk tokens; context = mean over the
            scheduled requests of their KV length (prompt + emitted for decoders, computed +
            chunk for prefills)
  drafts  = K * cost.draft_s(scheduled decoders, context) (sequential), or the part of it not
            hidden behind the target pass (draft_mode = "parallel")
  prefill = cost.prefill_s per request admitted this step + cost.prefill_per_token_s per prefill
            token (the prompt's FLOPs are already in T: roofline adds no extra prefill forward)
"""
from __future__ import annotations

import numpy as np

from contract.config import ConfigError
from sim.replica import EMIT, FIRST, ID, OUT, PROMPT, SLOT, ARRIVAL, PREFETCH, Replica

DONE = 5  # extra int column: prompt tokens already computed


class VllmReplica(Replica):
    def __init__(self, *args, budget: int = 8192, chunked: bool = True, **kw):
        super().__init__(*args, **kw)
        self.budget, self.chunked = int(budget), bool(chunked)
        self.I = np.zeros((0, 6), np.int64)

    # ------------------------------------------------------------ admission (waiting -> running)
    def _admit_waiting(self, now: float, budget: int, drafting: bool) -> tuple[int, int]:
        """Admit arrived waiting requests FCFS into free seats within `budget`: (admitted, tokens used)."""
        q = self.queue
        admitted = used = 0
        while budget - used > 0 and self.I.shape[0] < self.max_batch and q._fill():
            ch, h = q.buf[0], q.head
            seats = self.max_batch - self.I.shape[0]
            arrived = int(np.searchsorted(ch.arrival_s[h : h + seats], now, side="right"))
            if arrived == 0:
                break
            cum = np.cumsum(ch.prompt_len[h : h + arrived])
            left = budget - used
            whole = int(np.searchsorted(cum, left, side="right"))  # prompts that fit whole
            m = min(arrived, whole + 1) if self.chunked else whole  # chunked: one more, cut to the budget
            if m == 0:
                if self.I.shape[0] == 0 and admitted == 0:
                    raise ConfigError(f"server.max_num_batched_tokens: a prompt of {int(cum[0])} tokens never fits "
                                      f"the budget of {self.budget} with server.chunked_prefill = false")
                break
            new = q.take(now, m)
            self._add_rows(new, drafting)
            admitted += m
            used += min(int(new.prompt_len.sum()), left)
            if m < arrived:  # the budget ran out (or the next prompt waits whole)
                break
        return admitted, used

    def _add_rows(self, new, drafting: bool) -> None:
        m = len(new)
        slots = self.free[-m:][::-1]
        del self.free[-m:]
        rows = np.zeros((m, 6), np.int64)
        rows[:, ID], rows[:, PROMPT], rows[:, OUT], rows[:, SLOT] = new.id, new.prompt_len, new.output_len, slots
        frows = np.empty((m, 2))
        frows[:, ARRIVAL], frows[:, FIRST] = new.arrival_s, np.nan
        self.I = np.concatenate([self.I, rows]) if self.I.shape[0] else rows
        self.F = np.concatenate([self.F, frows]) if self.F.shape[0] else frows
        if drafting:
            if not self.acc.covers(new.id):
                ids, out = self.queue.peek(PREFETCH)
                self.acc.prefetch(np.concatenate([new.id, ids]), np.concatenate([new.output_len, out]))
            self.acc.admit(rows[:, SLOT], new.id, new.output_len)
        self.outstanding += int(new.output_len.sum())
        self.ctx_sum += int(new.prompt_len.sum())

    # ------------------------------------------------------------ the step's cost
    def _step_cost(self, n_sched: int, nd: int, k: int, lengths, prefill_tokens: int, admitted: int, context: float):
        """(prefill extras, draft seconds, target seconds) of one mixed step."""
        cost = self.cost
        tokens = nd + (self.cost.verified_tokens(lengths) if nd else 0) + prefill_tokens
        target = float(cost.target_s(n_sched, tokens, context))
        draft = k * float(cost.draft_s(nd, context)) if (k and nd) else 0.0
        if cost.cfg.draft_mode == "parallel":
            draft = max(draft - target, 0.0)
        c = cost.cfg
        return c.prefill_s * admitted + c.prefill_per_token_s * prefill_tokens, draft, target

    # ------------------------------------------------------------ the process
    FAST_DECODE = True  # decode-only steps within the budget take _decode_step (same result, fewer numpy calls)

    def _arrived(self, now: float) -> bool:
        nxt = self.queue.next_arrival()
        return nxt is not None and nxt <= now

    def _decode_step(self, k, truth, est, passed, lengths, accepted):
        """A step of decodes only, every window whole within the budget (the general path's special case)."""
        env, I = self.env, self.I
        n = I.shape[0]
        prefill, draft_s, target_s = self._step_cost(n, n, k, lengths, 0, 0, self.context)
        dt = draft_s + target_s
        emitted = accepted + 1
        if self.on_step is not None:
            self.on_step(self, dict(start_s=env.now, dt=dt, batch=n, drafts=k, ids=I[:, ID].copy(),
                                    arrival=self.F[:, ARRIVAL].copy(), pos=I[:, EMIT].copy(), truth=truth, est=est,
                                    passed=passed, lengths=lengths, accepted=accepted, emitted=emitted, prefill_s=0.0,
                                    tokens=n + int(lengths.sum()), prefill_tokens=0, prefill_ids=I[:0, ID].copy(),
                                    first_ids=I[:0, ID].copy(), decodes=n, admitted=0))
        yield env.timeout(dt)
        self.policy.observe(lengths, accepted)
        stats = self.stats
        stats.add_step(n, k, lengths, accepted, emitted)
        stats.target_s += target_s
        stats.draft_s += draft_s
        I = self.I
        I[:, EMIT] += emitted
        total = int(emitted.sum())
        self.outstanding -= total
        self.ctx_sum += total
        fin = I[:, EMIT] >= I[:, OUT]
        if fin.any():
            self._retire(env.now, fin)

    def run(self):
        env = self.env
        floor = 0.0
        policy, acc, stats = self.policy, self.acc, self.stats
        oracle = policy.needs_truth
        drafting = policy.speculates
        fast = acc.static and self.on_step is None and not oracle
        while True:
            now = max(env.now, floor)
            I = self.I
            nrun = I.shape[0]
            nd = int(np.count_nonzero(I[:, DONE] >= I[:, PROMPT])) if nrun else 0  # decoders: a prefix (FCFS)
            # 1. running requests: decoders' windows, then the budget in admission order
            k = policy.num_drafts(nd) if nd else 0
            if nd:
                dec = I[:nd]
                self.context = float((dec[:, PROMPT] + dec[:, EMIT]).mean())
                truth, est, passed, lengths, accepted = self._speculate(nd, k, fast, oracle, rows=dec)
            else:
                truth = est = passed = None
                lengths = accepted = np.zeros(0, np.int64)
            if self.FAST_DECODE and nd == nrun and nd and nd + int(lengths.sum()) <= self.budget and (
                    nrun >= self.max_batch or not self._arrived(now)):
                yield from self._decode_step(k, truth, est, passed, lengths, accepted)
                continue
            ask = np.concatenate([1 + lengths, I[nd:, PROMPT] - I[nd:, DONE]])
            before = np.concatenate([[0], np.cumsum(ask)[:-1]]) if nrun else ask
            take = np.minimum(ask, np.maximum(self.budget - before, 0))
            used = int(take.sum())
            # 2. waiting requests (vLLM skips this when it preempted; no preemption is modelled)
            admitted, _ = (self._admit_waiting(now, self.budget - used, drafting)
                                    if nrun < self.max_batch and used < self.budget else (0, 0))
            I = self.I
            n = I.shape[0]
            if n == 0:
                floor = yield from self._idle(env, floor)
                if floor is None:
                    return
                continue
            if admitted:  # the new rows' chunks: prompts whole, the last one cut to what was left
                left = self.budget - used
                p = I[nrun:, PROMPT]
                take = np.concatenate([take, np.minimum(p, np.maximum(left - np.concatenate([[0], np.cumsum(p)[:-1]]), 0))])
            sched_d = take[:nd] > 0
            lens = np.minimum(lengths, np.maximum(take[:nd] - 1, 0))
            acc_d = np.minimum(accepted, lens)
            chunk = take[nd:]
            n_sched = int(np.count_nonzero(sched_d)) + int(np.count_nonzero(chunk))
            pre_tokens = int(chunk.sum())
            ctx_all = np.concatenate([I[:nd, PROMPT] + I[:nd, EMIT], I[nd:, DONE] + chunk])
            context = float(ctx_all[take > 0].mean())
            nds = int(sched_d.sum())
            ls, as_ = lens[sched_d], acc_d[sched_d]
            prefill, draft_s, target_s = self._step_cost(n_sched, nds, k, ls, pre_tokens, admitted, context)
            dt = prefill + draft_s + target_s
            emitted = np.where(sched_d, acc_d + 1, 0)
            first = np.zeros(n, bool)  # prompts whose last token is computed this step: their first token
            first[nd:] = (I[nd:, DONE] + chunk >= I[nd:, PROMPT]) & (chunk > 0)
            if self.on_step is not None:
                self.on_step(self, dict(start_s=env.now, dt=dt, batch=n_sched, drafts=k, ids=I[:nd, ID][sched_d].copy(),
                                        arrival=self.F[:nd, ARRIVAL][sched_d].copy(), pos=I[:nd, EMIT][sched_d].copy(),
                                        truth=None if truth is None else truth[sched_d],
                                        est=None if est is None else est[sched_d],
                                        passed=None if passed is None else passed[sched_d], lengths=ls, accepted=as_,
                                        emitted=emitted[sched_d], prefill_s=prefill, tokens=int(take.sum()),
                                        prefill_tokens=pre_tokens, prefill_ids=I[nd:, ID][chunk > 0].copy(),
                                        first_ids=I[first, ID].copy(), decodes=nds, admitted=admitted))
            yield env.timeout(dt)
            now = env.now
            if nds:
                policy.observe(ls, as_)
            I, F = self.I, self.F
            I[nd:, DONE] += chunk
            nfirst = int(first.sum())
            stats.add_step(nds, k, ls, as_, np.concatenate([emitted[sched_d], np.ones(nfirst, np.int64)]))
            stats.request_steps += n_sched - nds
            stats.target_s += target_s
            stats.draft_s += draft_s
            stats.prefill_s += prefill
            I[:nd, EMIT] += emitted
            I[first, EMIT] = 1
            F[first, FIRST] = now
            total = int(emitted.sum()) + nfirst
            self.outstanding -= total
            self.ctx_sum += total
            fin = I[:, EMIT] >= I[:, OUT]
            if fin.any():
                self._retire(now, fin)
