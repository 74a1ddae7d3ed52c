"""Per-step log of a vLLM run: a Scheduler subclass (SchedulerConfig.scheduler_cls) writing one
JSON line per engine step to the file named by TETRIS_VLLM_STEPLOG (the engine-core process).

Line format (STEPLOG_FIELDS; times are time.monotonic() seconds, the clock of RequestOutput.metrics):
  {"step": i, "start_s": schedule() entered, "end_s": update_from_output() entered (the model ran),
   "requests": [project request ids], "tokens": [tokens scheduled per request],
   "drafts": [draft tokens verified per request], "accepted": [accepted drafts per request],
   "emitted": [tokens emitted per request this step], "decode": [bool: the request had emitted a
   token before this step (else it is in prefill)], "context": [tokens in its KV cache before this
   step], "k": draft tokens proposed per request this step (the speculative config's K; 0 = none),
   "cpu_start_s", "cpu_end_s": CPU seconds of the engine-core process and its worker processes
   (every thread, /proc/<pid>/task/*/schedstat) at the same two points}
steps_to_stats() folds the decode rows into contract.metrics.StepStats (what the native engine
counts per step), so summary.json's acceptance metrics come from the same definitions.
"""
from __future__ import annotations

import json
import os
import time

from vllm.v1.core.sched.scheduler import Scheduler

STEPLOG_ENV = "TETRIS_VLLM_STEPLOG"
STEPLOG_FIELDS = ("step", "start_s", "end_s", "cpu_start_s", "cpu_end_s", "requests", "tokens", "drafts", "accepted", "emitted", "decode",
                  "context", "k")


def project_id(req_id: str) -> int:
    """vLLM makes internal ids '<ours>-<8 hex>' (input_processor); ours is the project request id."""
    return int(str(req_id).split("-")[0])


def _task_ns(pid) -> int:
    """CPU nanoseconds of every thread of process `pid` (/proc/<pid>/task/*/schedstat, field 1)."""
    total = 0
    base = f"/proc/{pid}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"{base}/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds so far of this engine-core process and its worker processes (ns resolution)."""
    return sum(_task_ns(p) for p in pids) * 1e-9


def _pids() -> list[int]:
    import psutil

    me = psutil.Process()
    return [me.pid] + [c.pid for c in me.children(recursive=True)]


class StepLogScheduler(Scheduler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        path = os.environ.get(STEPLOG_ENV, "")
        self._log = open(path, "a", buffering=1 << 16) if path else None
        self._step = 0
        self._start = self._cpu_start = self._cpu_end = 0.0
        self._pid_list: list[int] | None = None
        self._emitted_before: set[str] = set()
        spec = getattr(self.vllm_config, "speculative_config", None)
        self._k = int(spec.num_speculative_tokens) if spec is not None else 0

    def schedule(self, *args, **kwargs):
        self._start = time.monotonic()
        if self._pid_list is None:
            self._pid_list = _pids()  # the worker processes exist once steps are scheduled
        self._cpu_start = cpu_seconds(self._pid_list)
        return super().schedule(*args, **kwargs)

    def update_from_output(self, scheduler_output, model_runner_output):
        end = time.monotonic()
        self._cpu_end = cpu_seconds(self._pid_list or [os.getpid()])
        if self._log is not None and scheduler_output.total_num_scheduled_tokens > 0:
            self._write(scheduler_output, model_runner_output, end)
        return super().update_from_output(scheduler_output, model_runner_output)

    def _write(self, so, mro, end: float) -> None:
        rec = {"step": self._step, "start_s": self._start, "end_s": end, "cpu_start_s": self._cpu_start,
               "cpu_end_s": self._cpu_end, "requests": [], "tokens": [],
               "drafts": [], "accepted": [], "emitted": [], "decode": [], "context": [], "k": self._k}
        sampled = mro.sampled_token_ids or []
        for rid, n in so.num_scheduled_tokens.items():
            idx = mro.req_id_to_index.get(rid)
            gen = len(sampled[idx]) if idx is not None and idx < len(sampled) else 0
            drafts = len(so.scheduled_spec_decode_tokens.get(rid, ()))
            rec["requests"].append(project_id(rid))
            rec["tokens"].append(int(n))
            rec["drafts"].append(drafts)
            rec["accepted"].append(max(gen - 1, 0) if drafts else 0)
            rec["emitted"].append(gen)
            rec["decode"].append(rid in self._emitted_before)
            req = self.requests.get(rid)
            rec["context"].append(int(req.num_computed_tokens) - int(n) if req is not None else -1)
            if gen:
                self._emitted_before.add(rid)
        self._step += 1
        self._log.write(json.dumps(rec) + "\n")
        self._log.flush()

    def shutdown(self):
        if self._log is not None:
            self._log.close()
            self._log = None
        return super().shutdown()
