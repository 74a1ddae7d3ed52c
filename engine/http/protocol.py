"""OpenAI request bodies -> GenRequest, or an ApiError (OpenAI-style error JSON).

    req = parse(body, chat=False, limits)   # raises ApiError(400, message, param)

Supported: model, prompt (a string, one token-id list, or a one-item list of either) or messages,
max_tokens (max_completion_tokens for chat), temperature (must equal the server's
engine.temperature: the engine samples at one temperature), seed, stop (string or list),
ignore_eos, stream, stream_options.include_usage, return_token_ids (vLLM's extension), n = 1.
Sampling knobs the engine does not have (top_p != 1, top_k, penalties, logprobs, best_of, echo)
are refused with a 400 naming the parameter rather than silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for /v1/completions
MAX_STOPS = 4  # as OpenAI


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class Limits:
    model_name: str
    temperature: float  # the engine's (engine.temperature)
    max_positions: int  # prompt + output tokens a request may use
    vocab_size: int


@dataclass
class GenRequest:
    prompt_ids: list[int]
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    return_token_ids: bool = False
    chat: bool = False


def _bad(message: str, param: str | None) -> ApiError:
    return ApiError(400, message, param)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _num(body: dict, key: str):
    v = body.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise _bad(f"{key}: expected a number, got {type(v).__name__}", key)
    return v


def _bool(body: dict, key: str, default: bool) -> bool:
    v = body.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise _bad(f"{key}: expected true or false, got {v!r}", key)
    return v


def _unsupported(body: dict) -> None:
    """Knobs the engine lacks: refused unless they hold their neutral value."""
    neutral = {"top_p": (None, 1, 1.0), "top_k": (None, -1, 0), "presence_penalty": (None, 0, 0.0),
               "frequency_penalty": (None, 0, 0.0), "repetition_penalty": (None, 1, 1.0), "logprobs": (None, False, 0),
               "top_logprobs": (None, 0), "best_of": (None, 1), "echo": (None, False), "n": (None, 1),
               "min_tokens": (None, 0), "logit_bias": (None, {}), "suffix": (None, "")}
    for key, ok in neutral.items():
        v = body.get(key)
        if not any(v == o and type(v) is type(o) for o in ok):
            raise _bad(f"{key}={v!r} is not supported by this server (the native engine); leave it unset", key)


def _prompt_ids(body: dict, tokenizer, limits: Limits) -> list[int]:
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]  # a one-item batch
    if isinstance(p, str):
        ids = tokenizer.encode(p)
    elif isinstance(p, list) and p and all(_is_int(t) for t in p):
        bad = [t for t in p if not 0 <= t < limits.vocab_size]
        if bad:
            raise _bad(f"prompt: token id {bad[0]} is outside the vocabulary [0, {limits.vocab_size})", "prompt")
        ids = list(p)
    elif p is None:
        raise _bad("prompt: required", "prompt")
    elif isinstance(p, list) and len(p) > 1 and all(isinstance(x, (str, list)) for x in p):
        raise _bad("prompt: one prompt per request (send several requests; the server batches them)", "prompt")
    else:
        raise _bad("prompt: expected a string or a list of token ids", "prompt")
    if not ids:
        raise _bad("prompt: empty after tokenization", "prompt")
    return ids


def _chat_ids(body: dict, tokenizer) -> list[int]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise _bad("messages: expected a non-empty list of {role, content}", "messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _bad(f"messages[{i}]: expected {{\"role\": str, \"content\": str}}", "messages")
    plain = [{"role": m["role"], "content": m["content"]} for m in msgs]
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    # no chat template (the committed tiny pair): "role: content" lines, then "assistant:"
    text = "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"
    return tokenizer.encode(text)


def _stops(body: dict) -> list[str]:
    s = body.get("stop")
    if s is None:
        return []
    if isinstance(s, str):
        s = [s]
    if not isinstance(s, list) or not all(isinstance(x, str) for x in s):
        raise _bad("stop: expected a string or a list of strings", "stop")
    if len(s) > MAX_STOPS:
        raise _bad(f"stop: at most {MAX_STOPS} stop strings", "stop")
    return [x for x in s if x]


def parse(body, tokenizer, limits: Limits, chat: bool = False) -> GenRequest:
    """Validate one /v1/completions or /v1/chat/completions body (ApiError on a bad one)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object", None)
    model = body.get("model")
    if model is not None and model != limits.model_name:
        raise ApiError(400, f"The model `{model}` does not exist; this server serves `{limits.model_name}`",
                       "model", code="model_not_found")
    _unsupported(body)
    temp = _num(body, "temperature")
    if temp is not None:
        if temp < 0:
            raise _bad(f"temperature: must be >= 0, got {temp}", "temperature")
        if abs(float(temp) - limits.temperature) > 1e-9:
            raise _bad(f"temperature={temp}: this server samples at temperature {limits.temperature:g} only "
                       f"(engine.temperature; one temperature per engine); send {limits.temperature:g} or omit it",
                       "temperature")
    seed = body.get("seed")
    if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
        raise _bad(f"seed: expected an integer in [0, 2^63), got {seed!r}", "seed")
    ids = _chat_ids(body, tokenizer) if chat else _prompt_ids(body, tokenizer, limits)
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    mt = body.get(key)
    room = limits.max_positions - len(ids)
    if mt is None:
        mt = room if chat else min(COMPLETIONS_DEFAULT_MAX_TOKENS, room)
    elif not _is_int(mt) or mt < 1:
        raise _bad(f"{key}: expected an integer >= 1, got {mt!r}", key)
    if len(ids) + mt > limits.max_positions or mt < 1:
        raise ApiError(400, f"This model's maximum context length is {limits.max_positions} tokens. However, you "
                       f"requested {len(ids) + max(mt, 1)} tokens ({len(ids)} in the prompt, {max(mt, 1)} in the "
                       f"completion). Please reduce the prompt or {key}.", "prompt" if room < 1 else key,
                       code="context_length_exceeded")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise _bad("stream_options: expected an object", "stream_options")
    return GenRequest(prompt_ids=list(ids), max_tokens=int(mt), stream=_bool(body, "stream", False),
                      include_usage=bool((opts or {}).get("include_usage", False)), seed=seed, stops=_stops(body),
                      ignore_eos=_bool(body, "ignore_eos", False),
                      return_token_ids=_bool(body, "return_token_ids", False), chat=chat)
