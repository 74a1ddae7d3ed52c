"""Prometheus metrics of `tetris serve`, with vLLM's (v1) names and labels (model_name, engine).

Speculative decoding, counted per engine step (StepOut), as vLLM counts them:
  vllm:spec_decode_num_drafts_total          request-steps that verified >= 1 draft token
  vllm:spec_decode_num_draft_tokens_total    draft tokens verified (the policy's windows, sum L_i)
  vllm:spec_decode_num_accepted_tokens_total draft tokens accepted
  vllm:spec_decode_num_accepted_tokens_per_pos_total{position}  accepted at window position (0-based)
These equal the project's StepStats: num_drafts, verified_tokens, accepted_tokens, accepted_at.
TETRIS drafts K per request but verifies only its selection; vLLM's draft-token count is also the
scheduled (verified) drafts, so the names mean the same thing.

Requests and latency: vllm:num_requests_running / _waiting (gauges), vllm:prompt_tokens_total,
vllm:generation_tokens_total, vllm:request_success_total{finished_reason}, histograms
vllm:time_to_first_token_seconds, vllm:inter_token_latency_seconds (one observation per step that
gave the request tokens), vllm:request_time_per_output_token_seconds and its older name
vllm:time_per_output_token_seconds (per finished request: decode time / (tokens - 1)),
vllm:e2e_request_latency_seconds, vllm:request_queue_time_seconds, vllm:request_prompt_tokens,
vllm:request_generation_tokens. Also the standard process_* metrics (process_cpu_seconds_total:
`tetris bench-serve` reports the server's CPU seconds per run, a figure a shared machine's load
does not inflate the way it inflates wall-clock latencies).
"""
from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for app.py)
from prometheus_client import disable_created_metrics

disable_created_metrics()  # as vLLM: no *_created series

TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0, 160.0, 640.0, 2560.0]  # vLLM's
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0]
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


class ServeMetrics:
    def __init__(self, model_name: str, running=lambda: 0, waiting=lambda: 0):
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total etc. (bench-serve reads the CPU seconds)
        r, lab = self.registry, ["model_name", "engine"]
        self.labels = {"model_name": model_name, "engine": "0"}

        def counter(name, doc, extra=()):
            return Counter(name, doc, lab + list(extra), registry=r)

        def hist(name, doc, buckets):
            return Histogram(name, doc, lab, buckets=buckets, registry=r).labels(**self.labels)

        g = Gauge("vllm:num_requests_running", "Requests in the running batch", lab, registry=r)
        g.labels(**self.labels).set_function(running)
        g = Gauge("vllm:num_requests_waiting", "Requests waiting to join the batch", lab, registry=r)
        g.labels(**self.labels).set_function(waiting)
        self.drafts = counter("vllm:spec_decode_num_drafts", "Request-steps that verified draft tokens").labels(**self.labels)
        self.draft_tokens = counter("vllm:spec_decode_num_draft_tokens", "Draft tokens verified").labels(**self.labels)
        self.accepted = counter("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted").labels(**self.labels)
        self._per_pos = counter("vllm:spec_decode_num_accepted_tokens_per_pos", "Accepted draft tokens per position",
                                ["position"])
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens prefilled").labels(**self.labels)
        self.generation_tokens = counter("vllm:generation_tokens", "Output tokens generated").labels(**self.labels)
        self._success = counter("vllm:request_success", "Finished requests", ["finished_reason"])
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token", TTFT_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Time between token deliveries", ITL_BUCKETS)
        self.tpot = hist("vllm:request_time_per_output_token_seconds", "Per request: decode time / (tokens - 1)",
                         ITL_BUCKETS)
        self.tpot_old = hist("vllm:time_per_output_token_seconds", "Same as request_time_per_output_token (old name)",
                             ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "Arrival to last token", E2E_BUCKETS)
        self.queue = hist("vllm:request_queue_time_seconds", "Arrival to admission", E2E_BUCKETS)
        self.req_prompt = hist("vllm:request_prompt_tokens", "Prompt tokens per request", TOKEN_BUCKETS)
        self.req_gen = hist("vllm:request_generation_tokens", "Output tokens per request", TOKEN_BUCKETS)

    def on_step(self, lengths: np.ndarray, accepted: np.ndarray) -> None:
        """One engine step's verified windows [N] and accepted drafts [N]."""
        lengths, accepted = np.asarray(lengths), np.asarray(accepted)
        self.drafts.inc(int((lengths > 0).sum()))
        self.draft_tokens.inc(int(lengths.sum()))
        self.accepted.inc(int(accepted.sum()))
        for j in range(int(lengths.max(initial=0))):
            self._per_pos.labels(position=str(j), **self.labels).inc(int((accepted > j).sum()))

    def on_finish(self, reason: str, arrival: float, admitted: float, first: float, last: float,
                  prompt_len: int, output_len: int) -> None:
        self._success.labels(finished_reason=reason, **self.labels).inc()
        self.e2e.observe(last - arrival)
        self.queue.observe(max(0.0, admitted - arrival))
        self.req_prompt.observe(prompt_len)
        self.req_gen.observe(output_len)
        if output_len > 1:
            tpot = (last - first) / (output_len - 1)
            self.tpot.observe(tpot)
            self.tpot_old.observe(tpot)

    def text(self) -> bytes:
        return generate_latest(self.registry)
