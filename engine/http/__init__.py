"""`tetris serve`: the native engine behind an OpenAI-compatible HTTP API (docs/serve.md).

    protocol.py  request parsing and validation -> GenRequest, OpenAI-style errors
    textout.py   incremental detokenization with EOS and stop strings
    loop.py      the engine thread: continuous batching over Engine.admit / Engine.step
    metrics.py   Prometheus metrics with vLLM's names
    app.py       the routes (Starlette / FastAPI)
    cli.py       `tetris serve` and `tetris bench-serve`
    bench.py     the load generator (vllm bench serve's result JSON)
"""
