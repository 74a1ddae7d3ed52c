"""One serving replica: a FIFO of waiting requests and a simpy step-loop process.

Requests are data, not processes: the running batch is two small numpy tables
(int columns ID, PROMPT, OUT, EMIT, SLOT and float columns ARRIVAL, FIRST; rows
in admission order) and one simpy timeout per step moves the clock, so events
scale with steps, not tokens. One step:

  1. admit waiting requests that have arrived, up to server.max_batch
     (continuous batching); their prefill cost is added to this step;
  2. K = policy.num_drafts(n); draft K tokens per request (no drafts past a
     request's last output token: those positions are NaN for the policy);
  3. L = policy.allocate(estimates, truth) with theory.policy, unchanged;
  4. verify: A_i = leading passed drafts within L_i; emit A_i + 1 tokens;
     (server.admission = "mixed": requests joining a running batch instead ride in its pass at
     cost.mixed_prefill, get no drafts and emit only their first token this step);
  5. the step costs prefill + drafting + target pass (sim/cost.py; a policy that stops early drafts
     D = min(K, deepest emittable, max(L) + 1) deep, as the engine: theory.policy.Policy.drafted_depth); at its end
     the clock advances, first tokens and finished requests are stamped, and
     finished requests retire.
With nothing running the replica sleeps until the next arrival (or until the
router hands it work); it never idles while an arrived request waits.
"""
from __future__ import annotations

import numpy as np

from contract.metrics import RecordSink, StepStats
from contract.workload import RequestChunk

_FIELDS = ("id", "arrival_s", "prompt_len", "output_len")
PREFETCH = 63  # requests whose acceptance draws are made together with an admission


class RequestQueue:
    """Waiting requests in arrival order, fed by a chunk iterator and/or push()."""

    def __init__(self, chunks=None):
        self.chunks = iter(chunks) if chunks is not None else None  # lazy source
        self.buf: list[RequestChunk] = []
        self.head = 0  # next request inside buf[0]
        self.pending: list[tuple] = []  # pushed one by one by a router
        self.routed = chunks is None  # fed by push() only
        self.queued_tokens = 0  # output tokens of pushed, not yet taken requests

    def push(self, rid: int, arrival: float, prompt: int, output: int) -> None:
        self.pending.append((rid, arrival, prompt, output))
        self.queued_tokens += output

    def _fill(self) -> bool:
        while self.buf and self.head >= len(self.buf[0]):
            self.buf.pop(0)
            self.head = 0
        if self.buf:
            return True
        if self.pending:
            cols = list(zip(*self.pending))
            self.pending = []
            self.buf.append(RequestChunk(np.array(cols[0], np.int64), np.array(cols[1], np.float64),
                                         np.array(cols[2], np.int64), np.array(cols[3], np.int64)))
            return True
        if self.chunks is not None:
            for chunk in self.chunks:
                if len(chunk):
                    self.buf.append(chunk)
                    return True
            self.chunks = None
        return False

    def peek(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """ids and output lengths of up to n waiting requests (arrived or not), without taking them."""
        if not self._fill():
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ch, h = self.buf[0], self.head
        return ch.id[h : h + n], ch.output_len[h : h + n]

    def next_arrival(self) -> float | None:
        """Arrival time of the first waiting request, None when empty."""
        if not self._fill():
            return None
        return float(self.buf[0].arrival_s[self.head])

    def take(self, now: float, n: int) -> RequestChunk | None:
        """Up to n waiting requests that arrived by `now`, as one chunk (None if none)."""
        parts = []
        while n > 0 and self._fill():
            ch, h = self.buf[0], self.head
            arr = ch.arrival_s
            m = min(n, arr.size - h)
            if arr[h + m - 1] > now:  # not all arrived: find how many did
                m = int(np.searchsorted(arr[h : h + m], now, side="right"))
                if m == 0:
                    break
            parts.append(RequestChunk(ch.id[h : h + m], arr[h : h + m], ch.prompt_len[h : h + m], ch.output_len[h : h + m]))
            self.head += m
            n -= m
            if self.head < arr.size:
                break
        if not parts:
            return None
        out = parts[0] if len(parts) == 1 else RequestChunk(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))
        if self.routed:
            self.queued_tokens -= int(out.output_len.sum())
        return out


# columns of the running batch's int64 table and float64 table
ID, PROMPT, OUT, EMIT, SLOT = range(5)
ARRIVAL, FIRST = range(2)


class Replica:
    def __init__(self, env, index: int, queue: RequestQueue, policy, cost, acceptance, max_batch: int,
                 sink: RecordSink, on_finish=None, on_step=None, mixed: bool = False, first_outside: bool = False):
        self.env, self.index, self.queue = env, index, queue
        self.mixed = mixed  # server.admission = "mixed": joiners' prompts ride in a running batch's pass
        self.first_outside = first_outside  # engine semantics: a prompt's first token is not in output_len
        self.policy, self.cost, self.acc = policy, cost, acceptance
        self.max_batch = max_batch
        self.on_finish = on_finish  # callable(count) after requests retire (progress)
        self.on_step = on_step  # callable(replica, dict) per step (tests, steps.csv)
        self.stats = StepStats()
        self.closed = not queue.routed  # True: nobody will push more work
        self.wake = None  # simpy event while sleeping for pushed work
        self.I = np.zeros((0, 5), np.int64)  # [n, 5] id, prompt_len, output_len, emitted, slot (tokens)
        self.F = np.zeros((0, 2))  # [n, 2] arrival_s, first_token_s (NaN until the first token)
        self.free = list(range(max_batch - 1, -1, -1))  # free acceptance-buffer slots (pop: lowest)
        self.sink = sink  # finished requests (contract.metrics.RecordSink, shared by replicas)
        self.context = 1.0  # mean context of the running batch (tokens), for the cost model
        self.outstanding = 0  # output tokens still to emit (running); + queue.queued_tokens
        self.ctx_sum = 0  # sum of prompt + emitted tokens over the running batch
        self.joined = 0  # requests admitted in the current step
        self._aranges: dict[int, np.ndarray] = {}

    # read-only views of the running batch (rows in admission order)
    ids = property(lambda self: self.I[:, ID])
    arrival = property(lambda self: self.F[:, ARRIVAL])
    emitted = property(lambda self: self.I[:, EMIT])
    out_len = property(lambda self: self.I[:, OUT])

    def contexts(self) -> np.ndarray:
        """[n] int64 context of each running request (prompt + emitted tokens), a new array."""
        return self.I[:, PROMPT] + self.I[:, EMIT]

    def _ar(self, k: int) -> np.ndarray:
        a = self._aranges.get(k)
        if a is None:
            a = self._aranges[k] = np.arange(k)
        return a

    # ------------------------------------------------------------ helpers
    def step_time(self, batch, drafts, verified):
        """theory.budget StepTime for the policy, at the current batch context."""
        return self.cost.step_s(batch, drafts, verified, self.context)

    def notify(self) -> None:
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def _admit(self, now: float, drafting: bool) -> float:
        q = self.queue
        if q.buf and q.head < q.buf[0].arrival_s.size and q.buf[0].arrival_s[q.head] > now:
            return 0.0  # the next waiting request has not arrived yet
        new = q.take(now, self.max_batch - self.I.shape[0])
        if new is None:
            return 0.0
        m = len(new)
        slots = self.free[-m:][::-1]
        del self.free[-m:]
        rows = np.empty((m, 5), np.int64)
        rows[:, ID], rows[:, PROMPT], rows[:, OUT], rows[:, EMIT], rows[:, SLOT] = new.id, new.prompt_len, new.output_len, 0, slots
        frows = np.empty((m, 2))
        frows[:, ARRIVAL], frows[:, FIRST] = new.arrival_s, np.nan
        if self.I.shape[0]:
            self.I = np.concatenate([self.I, rows])
            self.F = np.concatenate([self.F, frows])
        else:
            self.I, self.F = rows, frows
        if drafting:
            if not self.acc.covers(new.id):  # draw for these and the next PREFETCH waiting requests at once
                ids, out = q.peek(PREFETCH)
                self.acc.prefetch(np.concatenate([new.id, ids]), np.concatenate([new.output_len, out]))
            self.acc.admit(rows[:, SLOT], new.id, new.output_len)
        out_tokens, prompt_tokens = int(new.output_len.sum()), int(new.prompt_len.sum())
        self.outstanding += out_tokens
        self.ctx_sum += prompt_tokens
        self.joined = m
        return self.cost.prefill(m, prompt_tokens)

    def _retire(self, now: float, fin: np.ndarray) -> None:
        gone_i, gone_f = self.I[fin], self.F[fin]
        self.sink.add(gone_i[:, ID], gone_f[:, ARRIVAL], gone_f[:, FIRST], now, gone_i[:, PROMPT], gone_i[:, OUT], self.index)
        self.free.extend(gone_i[::-1, SLOT].tolist())
        self.ctx_sum -= int(gone_i[:, PROMPT].sum() + gone_i[:, EMIT].sum())
        if gone_i.shape[0] == self.I.shape[0]:
            self.I, self.F = self.I[:0], self.F[:0]
        else:
            keep = ~fin
            self.I, self.F = self.I[keep], self.F[keep]
        if self.on_finish is not None:
            self.on_finish(gone_i.shape[0])

    def _idle(self, env, floor):
        """No request running: wait for the next arrival (the new time floor) or, with none queued,
        for a wake-up (the floor unchanged); None once the replica is closed."""
        nxt = self.queue.next_arrival()
        if nxt is not None:
            yield env.timeout(max(0.0, nxt - env.now))
            return nxt
        if self.closed:
            return None
        self.wake = env.event()
        yield self.wake
        self.wake = None
        return floor

    def _speculate(self, n: int, k: int, fast: bool, oracle: bool, rows: np.ndarray | None = None):
        """Steps 2-4 for the running batch (or its first n rows `rows`): (truth, est, passed [n, k] or
        None, lengths [n], accepted [n]). fast: static acceptance without hooks (only estimates and
        accepted counts are built)."""
        if k == 0:
            zeros = np.zeros(n, np.int64)
            return None, None, None, zeros, zeros
        I, acc, policy = (self.I if rows is None else rows), self.acc, self.policy
        pos, slot = I[:, EMIT], I[:, SLOT]
        rem1 = I[:, OUT] - pos - 1  # drafts that can still be used
        if fast:
            est = acc.estimates(acc.index(slot, pos, k))
            if rem1.min() < k:
                est = np.where(self._ar(k) < rem1[:, None], est, np.nan)
            lengths = policy.allocate(est)
            return None, est, None, lengths, acc.accepted(slot, pos, lengths)
        truth, est, passed = acc.step(slot, pos, k)
        valid = self._ar(k) < rem1[:, None]
        est = np.where(valid, est, np.nan)
        lengths = policy.allocate(est, np.where(valid, passed, np.nan) if oracle else None)
        ok = passed & (self._ar(k) < lengths[:, None])
        accepted = np.where(ok.all(axis=1), k, ok.argmin(axis=1)).astype(np.int64)
        return truth, est, passed, lengths, accepted

    # ------------------------------------------------------------ the process
    def run(self):
        env = self.env
        floor = 0.0  # admission clock: max(env.now, the arrival we slept until)
        policy, cost, acc, stats = self.policy, self.cost, self.acc, self.stats
        oracle = policy.needs_truth
        drafting = policy.speculates
        fast = acc.static and self.on_step is None and not oracle
        while True:
            now = max(env.now, floor)
            self.joined = 0  # requests admitted this step (the last rows; their first step)
            running = self.I.shape[0]
            prefill = self._admit(now, drafting) if running < self.max_batch else 0.0
            n = self.I.shape[0]
            if n == 0:
                floor = yield from self._idle(env, floor)
                if floor is None:
                    return
                continue
            riding = self.joined if self.mixed and running else 0  # mixed: prompts in this pass, no drafts
            nd = n - riding  # rows that decode this step
            I = self.I
            self.context = self.ctx_sum / n if not riding else float((I[:nd, PROMPT] + I[:nd, EMIT]).mean())
            k = policy.num_drafts(nd)
            pos = I[:, EMIT]
            truth, est, passed, lengths, accepted = self._speculate(nd, k, fast, oracle, rows=I[:nd] if riding else None)
            d = policy.drafted_depth(k, lengths, I[:nd, OUT] - pos[:nd] - 1) if k else 0  # as the engine's early stop
            draft_s, target_s = cost.window_parts(nd, d, lengths, self.context)  # in the cost model's layout
            emitted = accepted + 1
            if riding:  # the joined pass emits each prompt's first token (engine semantics: outside output_len)
                p = I[nd:, PROMPT]
                prefill = cost.mixed_prefill(nd, nd + cost.verified_tokens(lengths), self.context, riding,
                                             int(p.sum()), float(p.mean()) / 2.0)
                emitted = np.concatenate([emitted, np.full(riding, 0 if self.first_outside else 1, np.int64)])
            dt = prefill + draft_s + target_s
            if self.on_step is not None:
                info = dict(start_s=env.now, dt=dt, batch=nd, drafts=d, ids=I[:nd, ID].copy(),
                            arrival=self.F[:nd, ARRIVAL].copy(), pos=pos[:nd].copy(), truth=truth, est=est,
                            passed=passed, lengths=lengths, accepted=accepted, emitted=emitted[:nd], prefill_s=prefill)
                if riding:  # as sim/vllm_sched.py: the rows whose prompt (and first token) this pass computes
                    info.update(prefill_ids=I[nd:, ID].copy(), first_ids=I[nd:, ID].copy())
                self.on_step(self, info)
            yield env.timeout(dt)
            now = env.now
            policy.observe(lengths, accepted)
            stats.add_step(nd, d, lengths, accepted, emitted[:nd])
            stats.target_s += target_s
            stats.draft_s += draft_s
            stats.prefill_s += prefill
            F = self.F
            if self.joined:  # every step emits >= 1 token, so only this step's joiners are fresh
                F[n - self.joined :, FIRST] = now
            pos += emitted  # in place: I[:, EMIT]
            total = int(emitted.sum())
            self.outstanding -= total
            self.ctx_sum += total
            fin = pos >= I[:, OUT]
            if fin.any():
                self._retire(now, fin)
