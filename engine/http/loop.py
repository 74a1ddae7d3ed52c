"""The engine thread: continuous batching of HTTP requests over Engine.admit / Engine.step.

    loop = EngineLoop(engine, max_batch=8, max_queue=256, metrics=m); loop.start()
    job = loop.submit(prompt_ids, max_tokens, rng, on_event)   # Overloaded / Draining when it cannot
    ...  on_event(("tokens", [ids])), then ("done", "length") or ("error", message), from the thread
    loop.abort(job)        # stop string / EOS / client gone: the engine drops it at the next step
    loop.drain(grace_s)    # shutdown: refuse new jobs, let running ones finish until the grace ends
    loop.close()           # join the thread

One thread owns the Engine. Each iteration: take new submissions, admit waiting jobs up to
max_batch (one batched prefill), run one step() with the configured policy, hand every job the
tokens it gained. A job the caller aborts is finished inside the engine by lowering its
output_len to what it has (public Seq fields only): the next step emits nothing for it and retires
it. Admission is FIFO. Capacity: max_batch running + max_queue waiting; more is refused.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from engine.core import Seq


class Overloaded(Exception):
    pass


class Draining(Exception):
    pass


@dataclass
class Job:
    seq: Seq
    on_event: Callable  # called from the engine thread with ("tokens", ids) / ("done", reason) / ("error", msg)
    arrival: float  # perf_counter seconds at submit
    admitted: float = 0.0
    first: float = 0.0
    last: float = 0.0
    sent: int = 0  # output tokens handed out
    aborted: bool = False
    abort_reason: str = "abort"  # finished_reason counted for an aborted job ("stop": EOS / stop string)


class EngineLoop:
    def __init__(self, engine, max_batch: int, max_queue: int, metrics=None, clock=time.perf_counter):
        self.engine, self.max_batch, self.max_queue = engine, max_batch, max_queue
        self.metrics, self.clock = metrics, clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._inbox: deque[Job] = deque()
        self.waiting: deque[Job] = deque()
        self.running: dict[int, Job] = {}  # id(seq) -> Job
        self.active = 0  # submitted, not yet finished (inbox + waiting + running)
        self._next_id = 0
        self._deadline: float | None = None  # drain: when the grace ends
        self._closing = False
        self.held = threading.Event()  # tests only: while set, the thread neither admits nor steps
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tetris-engine", daemon=True)

    # ------------------------------------------------------------ caller side (any thread)

    def start(self) -> None:
        self._thread.start()

    def next_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id - 1

    def submit(self, seq: Seq, on_event: Callable) -> Job:
        with self._lock:
            if self._deadline is not None or self.error is not None:
                raise Draining("the server is shutting down" if self.error is None else f"engine failed: {self.error}")
            if self.active >= self.max_batch + self.max_queue:
                raise Overloaded(f"server overloaded: {self.active} requests in flight (server.max_batch = "
                                 f"{self.max_batch} running + server.max_queue = {self.max_queue} waiting); retry later")
            self.active += 1
            job = Job(seq, on_event, self.clock())
            self._inbox.append(job)
        self._wake.set()
        return job

    def abort(self, job: Job, reason: str = "abort") -> None:
        job.abort_reason = reason
        job.aborted = True
        self._wake.set()

    def drain(self, grace_s: float) -> None:
        with self._lock:
            if self._deadline is None:
                self._deadline = self.clock() + grace_s
        self._wake.set()

    def close(self, timeout: float = 30.0) -> None:
        self.drain(0.0)
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def num_running(self) -> int:
        return len(self.running)

    def num_waiting(self) -> int:
        return len(self.waiting) + len(self._inbox)

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        try:
            while self._iterate():
                pass
        except BaseException as err:  # the engine broke: every job gets a clear error, new ones a 503
            self.error = err
            self._fail_all(f"engine error: {type(err).__name__}: {err}")

    def _iterate(self) -> bool:
        """One admission + step. False when the loop should end."""
        self._take_inbox()
        if self._deadline is not None and self.clock() >= self._deadline:
            self._fail_all("server shutting down: the request did not finish within server.shutdown_grace_s")
            return not self._closing and self.active > 0
        if self.held.is_set() or (not self.waiting and not self.running):
            if self._closing or (self._deadline is not None and self.active == 0):
                return False
            self._wake.wait(0.05)
            self._wake.clear()
            return True
        self._admit()
        if self.engine.seqs:
            self._step()
        return True

    def _take_inbox(self) -> None:
        with self._lock:
            while self._inbox:
                self.waiting.append(self._inbox.popleft())
        for job in [j for j in self.waiting if j.aborted]:
            self.waiting.remove(job)
            self._finished(job, None)
        for job in self.running.values():
            if job.aborted and not job.seq.done:
                job.seq.output_len = len(job.seq.out)  # retired by the next step (it emits nothing)

    def _admit(self) -> None:
        joining = []
        while self.waiting and len(self.engine.seqs) + len(joining) < self.max_batch:
            joining.append(self.waiting.popleft())
        if not joining:
            return
        now = self.clock()
        for job in joining:
            job.admitted = now
            self.running[id(job.seq)] = job
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(len(j.seq.prompt) for j in joining))
        if self.engine.mixed and self.engine.seqs:  # server.admission = "mixed": prompts ride in the next step
            self.engine.join([j.seq for j in joining])  # whose _deliver sends their first tokens
            return
        self.engine.admit([j.seq for j in joining])
        self._deliver(joining)

    def _step(self) -> None:
        out = self.engine.step()
        if self.metrics is not None:
            self.metrics.on_step(out.lengths, out.accepted)
        self._deliver(list(self.running.values()))

    def _deliver(self, jobs: list[Job]) -> None:
        now = self.clock()
        for job in jobs:
            s = job.seq
            new = s.out[job.sent:]
            if new:
                if job.sent == 0:
                    job.first = now
                    if self.metrics is not None:
                        self.metrics.ttft.observe(now - job.arrival)
                elif self.metrics is not None:
                    self.metrics.itl.observe(now - job.last)
                job.last = now
                job.sent = len(s.out)
                if self.metrics is not None:
                    self.metrics.generation_tokens.inc(len(new))
                if not job.aborted:
                    job.on_event(("tokens", list(new)))
            if s.done:
                del self.running[id(s)]
                self._finished(job, "length")

    def _finished(self, job: Job, reason: str | None) -> None:
        """reason None: aborted by the caller (it already answered)."""
        with self._lock:
            self.active -= 1
        if job.aborted:
            reason = job.abort_reason
        elif reason is not None:
            job.on_event(("done", reason))
        if self.metrics is not None and job.sent:
            self.metrics.on_finish(reason, job.arrival, job.admitted, job.first, job.last,
                                   len(job.seq.prompt), job.sent)

    def _fail_all(self, message: str) -> None:
        """Every unfinished job ends with an error (shutdown past the grace, or an engine failure)."""
        with self._lock:
            pending = list(self._inbox) + list(self.waiting) + list(self.running.values())
            self._inbox.clear()
            self.waiting.clear()
        for job in pending:
            if not job.aborted:
                job.on_event(("error", message))
            job.aborted = True
            if job.seq.out and not job.seq.done:
                job.seq.output_len = len(job.seq.out)
        with self._lock:
            self.active -= len(pending)
        if self.running and self.error is None:
            try:  # retire them from the engine (each step emits nothing for them)
                while self.engine.seqs:
                    self.engine.step()
            except Exception:
                pass
        self.running.clear()
