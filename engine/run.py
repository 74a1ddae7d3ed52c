"""Running a list of requests through an Engine: admission, arrivals, stats, records."""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from engine.core import Engine, Seq
from contract.metrics import RequestRecord, StepStats


@dataclass
class RunResult:
    seqs: list  # every Seq, in input order, with .out filled
    records: list  # contract.metrics.RequestRecord per request
    stats: StepStats
    duration_s: float  # seconds from start to the last finish
    select_s: float  # seconds spent estimating + allocating
    step_s: float  # seconds spent in decoding steps (draft + select + verify + bookkeeping)
    prefill_log: list  # per admission pass: (prompt tokens, seconds)
    step_log: list = None  # per decoding step: StepLog fields (STEP_LOG), for fits such as calibrate.fit_mixed


STEP_LOG = ("batch", "drafts", "verified", "context", "riding", "target_s", "draft_s")
# batch: requests decoding; drafts: D <= K drafted; verified: sum of the windows; context: sum of the rows' tokens
# before the step; riding: prompt tokens of joiners in this step's verification pass (mixed admission)


def run(engine: Engine, seqs: list[Seq], max_batch: int, *, timed: bool = False,
        arrivals_in_steps: bool = False, progress=None) -> RunResult:
    """Serve `seqs` (continuous batching, at most max_batch running).

    timed: arrival_s are wall-clock seconds from the start (the loop sleeps when idle);
    arrivals_in_steps: arrival_s counts decoding steps instead (deterministic, for tests);
    otherwise every request is available at once (offline).
    """
    queue = deque(sorted(seqs, key=lambda s: s.arrival_s))
    if not (timed or arrivals_in_steps):
        for s in queue:
            s.arrival_s = 0.0
    stats = StepStats()
    select_s = step_s = 0.0
    prefill_log, step_log = [], []
    engine.t0 = engine.clock()
    while queue or engine.seqs:
        now = float(engine.step_index) if arrivals_in_steps else engine.now()
        joining = []
        while queue and len(engine.seqs) + len(joining) < max_batch and queue[0].arrival_s <= now:
            joining.append(queue.popleft())
        if joining:
            if arrivals_in_steps:
                for s in joining:
                    s.arrival_s = engine.now()
            if engine.mixed and engine.seqs:  # their prefill rides in the next step's verification pass
                engine.join(joining)
                stats.mixed_prefills += len(joining)
            else:
                seconds = engine.admit(joining)
                stats.prefill_s += seconds
                stats.prefill_calls += 1
                prefill_log.append((sum(len(s.prompt) for s in joining), seconds))
                if progress is not None:
                    progress.update(sum(1 for s in joining if s.done))
        if not engine.seqs:
            if queue and timed:
                sleep = getattr(engine.clock, "sleep", time.sleep)  # a CpuClock sleeps virtually
                sleep(max(0.0, queue[0].arrival_s - engine.now()))
            elif queue and arrivals_in_steps:
                engine.step_index += 1  # idle step: let the step clock reach the next arrival
            continue
        context = sum(len(s.prompt) + len(s.out) for s in engine.seqs)
        joined = engine.joined_tokens
        t0 = engine.clock()
        out = engine.step()
        step_s += engine.clock() - t0
        step_log.append((out.batch, out.drafts, int(out.lengths.sum()), context, engine.joined_tokens - joined,
                         out.target_s, out.draft_s))
        stats.add_step(out.batch, out.drafts, out.lengths, out.accepted, out.emitted)
        stats.draft_s += out.draft_s
        stats.target_s += out.target_s
        select_s += out.select_s
        if progress is not None and out.finished:
            progress.update(len(out.finished))
    duration = max((s.finish_s for s in seqs), default=0.0)
    records = [RequestRecord(s.id, s.arrival_s, s.first_token_s, s.finish_s, len(s.prompt), len(s.out)) for s in seqs]
    return RunResult(list(seqs), records, stats, duration, select_s, step_s, prefill_log, step_log)
