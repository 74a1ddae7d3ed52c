"""`tetris serve` over real HTTP on 127.0.0.1: the committed tiny pair, greedy, TETRIS (k=2, e=1).

What these can catch (power): any token the server emits differently from the batch runner
(engine/serve.py run_config) for the same prompt ids, compared exactly (token ids and text); any
streamed chunk lost, duplicated or reordered (concatenation compared to the full text); any
spec-decode counter off by one against the batch runner's StepStats (same steps: sequential
requests vs a max_batch = 1 batch run); a bad request answered with anything but a 400 JSON error;
a full queue not answered 429. Negative control: test_control_broken_engine_differs runs the same
loop with the engine's accept_all break and must see different tokens (so the equality is not vacuous).
"""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from serve_fixtures import LiveServer, config  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

N, PROMPT, OUT = 8, 24, 20
SETS = ["policy.name=\"tetris\"", "policy.k=2", "policy.extra=1", "server.max_batch=4", "server.max_queue=4",
        f"workload.num_requests={N}", f"workload.prompt_len={{dist=\"fixed\", value={PROMPT}}}",
        f"workload.output_len={{dist=\"fixed\", value={OUT}}}", "server.shutdown_grace_s=2", "sweep=[]"]


@pytest.fixture(scope="module")
def models():
    from engine.pairs import load_pair

    return load_pair("")


@pytest.fixture(scope="module")
def reference(models):
    """The batch runner's outputs and StepStats: max_batch 4 (outputs) and max_batch 1 (counters)."""
    from engine.serve import build_workload, run_config

    cfg = config(*SETS)
    wl = build_workload(cfg, models[2], None)
    runs = {b: next(iter(run_config(config(*SETS, f"server.max_batch={b}"), progress=False, models=models).values()))
            for b in (4, 1)}
    outs = {s.id: s.out for s in runs[4].result.seqs}
    assert {s.id: s.out for s in runs[1].result.seqs} == outs  # greedy: batching does not change tokens
    return {"prompts": [list(p) for p in wl.prompts], "outs": [outs[i] for i in range(N)],
            "texts": [models[2].decode(outs[i], skip_special_tokens=True) for i in range(N)],
            "stats": runs[1].result.stats}


@pytest.fixture(scope="module")
def server(models, reference):
    srv = LiveServer(config(*SETS), models)
    yield srv
    srv.stop()


def post(srv, body, path="/v1/completions", timeout=60):
    return httpx.post(srv.url + path, json=body, timeout=timeout)


def metric_values(srv) -> dict:
    from engine.http.bench import parse_metrics

    text = httpx.get(srv.url + "/metrics", timeout=30).text
    vals = parse_metrics(text)
    for name in ("vllm:generation_tokens_total", "vllm:prompt_tokens_total"):
        line = next(ln for ln in text.splitlines() if ln.startswith(name + "{"))
        vals[name] = float(line.split()[-1])
    return vals


def test_models_and_health(server):
    assert httpx.get(server.url + "/health").status_code == 200
    data = httpx.get(server.url + "/v1/models").json()["data"]
    assert data[0]["id"] == "engine/pair" and data[0]["max_model_len"] == 1024


def concurrent_completions(srv, prompts):
    """Every prompt as its own client, all at once (greedy, OUT tokens, token ids returned)."""
    async def go():
        async with httpx.AsyncClient(timeout=120) as c:
            return await asyncio.gather(*(c.post(srv.url + "/v1/completions", json={
                "model": "engine/pair", "prompt": p, "max_tokens": OUT, "temperature": 0, "ignore_eos": True,
                "return_token_ids": True}) for p in prompts))

    return asyncio.run(go())


def test_concurrent_greedy_equals_batch_runner(server, reference):
    """8 clients at once (batch 4 + 4 queued): every output == the batch runner's, ids and text."""
    rs = concurrent_completions(server, reference["prompts"])
    assert [r.status_code for r in rs] == [200] * N
    for r, out, text in zip(rs, reference["outs"], reference["texts"]):
        body = r.json()
        ch = body["choices"][0]
        assert ch["token_ids"] == out
        assert ch["text"] == text
        assert ch["finish_reason"] == "length"
        assert body["usage"] == {"prompt_tokens": PROMPT, "completion_tokens": OUT, "total_tokens": PROMPT + OUT}


def sse(srv, body, path="/v1/completions"):
    chunks = []
    with httpx.stream("POST", srv.url + path, json=body, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunks.append(line[6:])
    assert chunks[-1] == "[DONE]"
    return [json.loads(c) for c in chunks[:-1]]


def test_streaming_chunks_concatenate(server, reference):
    for i in (0, 3):
        chunks = sse(server, {"prompt": reference["prompts"][i], "max_tokens": OUT, "ignore_eos": True,
                              "stream": True, "stream_options": {"include_usage": True}})
        text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
        assert text == reference["texts"][i]
        assert len([c for c in chunks if c["choices"]]) > 1  # really streamed, not one blob
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
        assert chunks[-1]["usage"]["completion_tokens"] == OUT


def test_chat_streaming_matches_chat_non_streaming(server):
    msg = {"messages": [{"role": "user", "content": "def add(a, b):"}], "max_tokens": 12, "ignore_eos": True}
    full = post(server, msg, "/v1/chat/completions").json()
    chunks = sse(server, msg | {"stream": True}, "/v1/chat/completions")
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == full["choices"][0]["message"]["content"]
    assert full["object"] == "chat.completion" and full["usage"]["completion_tokens"] == 12


def test_stop_string_cuts_the_text(server, reference):
    text = reference["texts"][1]
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = text.find(stop)
    assert stop and cut >= 0
    body = {"prompt": reference["prompts"][1], "max_tokens": OUT, "ignore_eos": True, "stop": [stop]}
    ch = post(server, body).json()["choices"][0]
    assert ch["text"] == text[:cut] and ch["finish_reason"] == "stop" and ch["stop_reason"] == stop
    chunks = sse(server, body | {"stream": True})
    assert "".join(c["choices"][0]["text"] for c in chunks) == text[:cut]


def test_metrics_equal_the_batch_runs_totals(server, reference):
    """Sequential requests step exactly as a max_batch = 1 batch run: counters equal its StepStats."""
    before = metric_values(server)
    for p in reference["prompts"]:
        assert post(server, {"prompt": p, "max_tokens": OUT, "ignore_eos": True}).status_code == 200
    after = metric_values(server)
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    st = reference["stats"]
    assert d["vllm:spec_decode_num_drafts_total"] == st.num_drafts
    assert d["vllm:spec_decode_num_draft_tokens_total"] == st.verified_tokens
    assert d["vllm:spec_decode_num_accepted_tokens_total"] == st.accepted_tokens
    per_pos = [d.get(f"vllm:spec_decode_num_accepted_tokens_per_pos_total[{j}]", 0.0) for j in range(len(st.accepted_at))]
    assert per_pos == list(st.accepted_at)
    assert st.accepted_tokens > 0 and st.verified_tokens > st.accepted_tokens  # the counts are not trivial
    assert d["vllm:generation_tokens_total"] == N * OUT
    assert d["vllm:prompt_tokens_total"] == N * PROMPT


BAD = [
    ({"prompt": "x", "model": "gpt-4"}, "model"),
    ({"prompt": [1] * 1020, "max_tokens": 10}, "max_tokens"),
    ({"prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "temperature": 0.5}, "temperature"),
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "top_p": 0.9}, "top_p"),
    ({"prompt": "x", "n": 2}, "n"),
    ({"prompt": [1, 99999]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"max_tokens": 3}, "prompt"),
    ({"prompt": "x", "seed": -1}, "seed"),
    ({"prompt": "x", "stop": [1, 2]}, "stop"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    (["not", "an", "object"], None),
]


@pytest.mark.parametrize("body,param", BAD, ids=[p or "body" for _, p in BAD])
def test_bad_requests_get_400(server, body, param):
    r = post(server, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["type"] == "invalid_request_error"


def test_bad_json_and_bad_chat(server):
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", timeout=30)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = post(server, {"messages": "hi"}, "/v1/chat/completions")
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_full_queue_gets_429(server, reference):
    """Engine held: 4 running + 4 queued fill server.max_batch + server.max_queue; the 9th gets 429."""
    loop = server.state.loop
    loop.held.set()
    try:
        async def go():
            async with httpx.AsyncClient(timeout=120) as c:
                body = {"prompt": reference["prompts"][0], "max_tokens": 4, "ignore_eos": True}
                tasks = [asyncio.create_task(c.post(server.url + "/v1/completions", json=body)) for _ in range(8)]
                for _ in range(400):  # bounded wait until all 8 are admitted to the loop
                    if loop.active == 8:
                        break
                    await asyncio.sleep(0.05)
                assert loop.active == 8
                extra = await c.post(server.url + "/v1/completions", json=body)
                loop.held.clear()
                return extra, await asyncio.gather(*tasks)

        extra, rs = asyncio.run(go())
    finally:
        loop.held.clear()
    assert extra.status_code == 429 and extra.json()["error"]["code"] == "queue_full"
    assert [r.status_code for r in rs] == [200] * 8


def test_bench_client_result_format(server, reference):
    from engine.http.bench import run_bench

    reqs = [(0.0, p, OUT) for p in reference["prompts"][:4]]
    res = run_bench(config(*SETS), server.url, reqs=reqs)
    assert res["completed"] == 4 and res["failed"] == 0
    assert res["total_output_tokens"] == 4 * OUT and res["output_lens"] == [OUT] * 4
    assert res["generated_texts"] == reference["texts"][:4]
    for m in ("ttft", "tpot", "itl", "e2el"):
        for s in ("mean", "median", "std", "p99"):
            assert np.isfinite(res[f"{s}_{m}_ms"])
    assert res["mean_ttft_ms"] > 0 and res["output_throughput"] > 0
    assert 1.0 < res["spec_decode_acceptance_length"] <= 3.0  # k = 2: at most 2 accepted + 1
    assert res["server_cpu_s"] > 0


def test_openai_python_client(server, reference):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
    r = client.completions.create(model="engine/pair", prompt=reference["prompts"][2], max_tokens=OUT,
                                  temperature=0, extra_body={"ignore_eos": True})
    assert r.choices[0].text == reference["texts"][2] and r.usage.completion_tokens == OUT
    stream = client.chat.completions.create(model="engine/pair", messages=[{"role": "user", "content": "import"}],
                                            max_tokens=8, stream=True, extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="nope", prompt="x", max_tokens=2)


def test_control_broken_engine_differs(models, reference):
    """Negative control: the same loop over an engine with accept_all (a deliberate break) gives
    other tokens than the batch runner, so the equality above can fail."""
    from engine.core import Engine, Seq
    from engine.http.loop import EngineLoop
    from contract.config import PolicyConfig
    from theory.policy import make_policy

    target, draft, _ = models
    eng = Engine(target, draft, make_policy(PolicyConfig(name="tetris", k=2, extra=1)), accept_all=True)
    loop = EngineLoop(eng, 4, 4)
    loop.start()
    got, done = {}, []
    for i, p in enumerate(reference["prompts"][:4]):
        loop.submit(Seq(i, list(p), OUT, np.random.default_rng(i)),
                    lambda ev, i=i: got.setdefault(i, []).extend(ev[1]) if ev[0] == "tokens" else done.append(ev))
    for _ in range(1200):  # bounded: at most ~60 s
        if len(done) == 4:
            break
        import time
        time.sleep(0.05)
    loop.close()
    assert len(done) == 4
    assert any(got[i] != reference["outs"][i] for i in range(4))


def test_mixed_admission_server_equals_batch_runner(models, reference):
    """server.admission = "mixed": the 4 queued clients' prompts ride in running steps (engine.join; their
    first tokens go out with that step), every output still == the batch runner's. Power: the same
    comparison as test_concurrent_greedy_equals_batch_runner, and at least one prompt rode (joined_tokens)."""
    srv = LiveServer(config(*SETS, 'server.admission="mixed"'), models)
    try:
        rs = concurrent_completions(srv, reference["prompts"])
        assert [r.status_code for r in rs] == [200] * N
        assert [r.json()["choices"][0]["token_ids"] for r in rs] == reference["outs"]
        assert srv.state.loop.engine.joined_tokens > 0
    finally:
        srv.stop()
