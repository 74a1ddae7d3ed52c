"""The HTTP routes: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics.

    app = make_app(state)     # state: ServeState (loop, tokenizer, limits, metrics, ...)

Streaming answers are Server-Sent Events, one `data: {json}` chunk per engine step that gave the
request text, ending with `data: [DONE]` (as OpenAI and vLLM). Errors are OpenAI-style JSON
{"error": {"message", "type", "param", "code"}} with status 400 (bad request), 429 (queue full)
or 503 (shutting down / engine failed).
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from contract.workload import acceptance_rng
from engine.core import Seq
from engine.http.loop import Draining, EngineLoop, Overloaded
from engine.http.metrics import CONTENT_TYPE_LATEST, ServeMetrics
from engine.http.protocol import ApiError, GenRequest, Limits, parse
from engine.http.textout import TextStream


@dataclass
class ServeState:
    loop: EngineLoop
    tokenizer: object
    limits: Limits
    metrics: ServeMetrics
    seed: int  # the config's seed: request i without a seed draws from acceptance_rng(seed, i), as the batch runner
    eos_id: int | None
    policy_label: str = ""
    draining: bool = False


class EngineFailed(Exception):
    pass


def _error(status: int, message: str, type_: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(ApiError(status, message, None, type_, code).body(), status_code=status)


def make_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="tetris serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.tetris = state

    @app.get("/health")
    async def health():
        return Response(status_code=503 if state.draining else 200)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": state.limits.model_name, "object": "model", "created": 0,
                                            "owned_by": "tetris-sd", "max_model_len": state.limits.max_positions}]}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _generate(state, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await _generate(state, request, chat=True)

    return app


async def _generate(state: ServeState, request: Request, chat: bool):
    if state.draining:
        return _error(503, "the server is shutting down", "ServiceUnavailableError")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return _error(400, "the request body is not valid JSON", "invalid_request_error")
    try:
        g = parse(body, state.tokenizer, state.limits, chat)
    except ApiError as e:
        return JSONResponse(e.body(), status_code=e.status)
    queue: asyncio.Queue = asyncio.Queue()
    aloop = asyncio.get_running_loop()

    def on_event(ev):  # engine thread -> this request's event loop
        try:
            aloop.call_soon_threadsafe(queue.put_nowait, ev)
        except RuntimeError:  # the event loop is closed (server gone)
            pass

    rid = state.loop.next_id()
    rng = acceptance_rng(g.seed if g.seed is not None else state.seed, 0 if g.seed is not None else rid)
    try:
        job = state.loop.submit(Seq(rid, list(g.prompt_ids), g.max_tokens, rng), on_event)
    except Overloaded as e:
        return _error(429, str(e), "RateLimitError", "queue_full")
    except Draining as e:
        return _error(503, str(e), "ServiceUnavailableError")
    ts = TextStream(state.tokenizer, g.stops, state.eos_id, g.ignore_eos)
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": state.limits.model_name}
    events = _events(state, job, queue, ts)
    if g.stream:
        return StreamingResponse(_sse(events, g, ts, head), media_type="text/event-stream")
    parts, reason = [], None
    try:
        async for delta, reason in events:
            parts.append(delta)
    except EngineFailed as e:
        return _error(503, str(e), "ServiceUnavailableError")
    return JSONResponse(_full(g, ts, head, "".join(parts), reason))


async def _events(state: ServeState, job, queue: asyncio.Queue, ts: TextStream):
    """(text delta, finish_reason or None) as the engine produces tokens; EngineFailed on an error."""
    finished = False
    try:
        while True:
            kind, val = await queue.get()
            if kind == "tokens":
                delta = ts.add(val)
                if ts.finish_reason is not None:
                    finished = True
                    state.loop.abort(job, "stop")  # EOS or a stop string: the engine drops it at its next step
                    yield delta, ts.finish_reason
                    return
                if delta:
                    yield delta, None
            elif kind == "done":
                finished = True
                yield ts.flush(), val
                return
            else:
                finished = True
                raise EngineFailed(val)
    finally:
        if not finished:  # the client went away: free the slot
            state.loop.abort(job)


def _usage(g: GenRequest, ts: TextStream) -> dict:
    return {"prompt_tokens": len(g.prompt_ids), "completion_tokens": len(ts.ids),
            "total_tokens": len(g.prompt_ids) + len(ts.ids)}


def _full(g: GenRequest, ts: TextStream, head: dict, text: str, reason) -> dict:
    choice = {"index": 0, "logprobs": None, "finish_reason": reason, "stop_reason": ts.stop_reason}
    if g.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    if g.return_token_ids:
        choice["prompt_token_ids"] = list(g.prompt_ids)
        choice["token_ids"] = list(ts.ids)
    obj = "chat.completion" if g.chat else "text_completion"
    return head | {"object": obj, "choices": [choice], "usage": _usage(g, ts)}


def _chunk(g: GenRequest, head: dict, text: str, reason, first: bool = False, ids=None) -> str:
    if g.chat:
        delta = {"role": "assistant", "content": text} if first else {"content": text}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
    if ids is not None:
        choice["token_ids"] = ids
    obj = "chat.completion.chunk" if g.chat else "text_completion"
    return "data: " + json.dumps(head | {"object": obj, "choices": [choice]}) + "\n\n"


async def _sse(events, g: GenRequest, ts: TextStream, head: dict):
    first, n_ids = True, 0
    try:
        async for delta, reason in events:
            ids = None
            if g.return_token_ids:
                ids, n_ids = ts.ids[n_ids:], len(ts.ids)
            if delta or reason is not None or first:
                yield _chunk(g, head, delta, reason, first, ids)
                first = False
        if g.include_usage:
            yield "data: " + json.dumps(head | {"object": "chat.completion.chunk" if g.chat else "text_completion",
                                                "choices": [], "usage": _usage(g, ts)}) + "\n\n"
    except EngineFailed as e:
        yield "data: " + json.dumps(ApiError(503, str(e), None, "ServiceUnavailableError").body()) + "\n\n"
    finally:
        await events.aclose()  # a client that went away frees its slot now
    yield "data: [DONE]\n\n"
