"""The one config tree shared by the simulator, the engine and the analysis.

Loaded from TOML, overridden with `--set dotted.key=<TOML value>`, validated
with errors that name the key, and written back as the resolved TOML beside
every result. Validation is generic: each dataclass field's type annotation,
plus optional metadata `choices`, `min`, `max`.
"""
from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contract.errors import ConfigError  # noqa: F401  (re-exported: contract.config.ConfigError)
from contract.outpaths import read_text
from theory.policies import REGISTRY
from theory.layout import LAYOUTS  # the verify layouts: packed, padded


def _f(default, *, choices=None, min=None, max=None, doc=""):
    meta = {"choices": choices, "min": min, "max": max, "doc": doc}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(x):
    import copy

    return copy.deepcopy(x)


LENGTH_DISTS = ("fixed", "uniform", "lognormal", "empirical")


@dataclass
class LengthDist:
    """A token-length distribution (prompt or output)."""

    dist: str = _f("fixed", choices=LENGTH_DISTS)
    value: int = _f(128, min=1, doc="fixed: the length (tokens)")
    low: int = _f(1, min=1, doc="uniform: inclusive lower bound (tokens)")
    high: int = _f(256, min=1, doc="uniform: inclusive upper bound (tokens)")
    median: float = _f(128.0, min=1.0, doc="lognormal: median (tokens)")
    sigma: float = _f(0.5, min=0.0, doc="lognormal: sigma of log-length")
    max: int = _f(4096, min=1, doc="clip for lognormal/empirical (tokens)")
    path: str = _f("", doc="empirical: file of lengths, one integer per line")


@dataclass
class WorkloadConfig:
    arrival: str = _f("offline", choices=("offline", "poisson", "gamma", "trace"))
    rate: float = _f(10.0, min=1e-9, doc="requests/s (poisson, gamma)")
    cv: float = _f(2.0, min=1e-6, doc="gamma: coefficient of variation of inter-arrival times")
    num_requests: int = _f(512, min=1)
    prompt_len: LengthDist = _f(LengthDist(dist="fixed", value=128))
    output_len: LengthDist = _f(LengthDist(dist="fixed", value=256))
    trace: str = _f("", doc="arrival=trace: JSONL/CSV with arrival_s, prompt_len, output_len")
    prompts: str = _f("", doc="engine: JSONL of {prompt} or {prompt_ids}; default held-out stdlib snippets")


@dataclass
class AcceptanceConfig:
    model: str = _f("iid", choices=("iid", "beta", "mixture", "trace"))
    alpha: float = _f(0.7, min=0.0, max=1.0, doc="iid: per-position acceptance probability")
    beta_a: float = _f(4.0, min=1e-6, doc="beta: per-request alpha ~ Beta(a, b)")
    beta_b: float = _f(2.0, min=1e-6)
    decay: float = _f(1.0, min=0.0, max=1.0, doc="per-position multiplicative decay of alpha")
    easy_alpha: float = _f(0.9, min=0.0, max=1.0, doc="mixture: acceptance in the easy regime")
    hard_alpha: float = _f(0.3, min=0.0, max=1.0, doc="mixture: acceptance in the hard regime")
    easy_frac: float = _f(0.5, min=0.0, max=1.0, doc="mixture: share of easy requests / segments")
    regime: str = _f("request", choices=("request", "segment"), doc="mixture: per request or per segment")
    segment_len: float = _f(32.0, min=1.0, doc="mixture/segment: mean segment length (tokens)")
    estimate: str = _f("perfect", choices=("perfect", "noisy", "overconfident", "underconfident"))
    noise: float = _f(0.1, min=0.0, doc="estimate: std of logit noise (noisy) or temperature shift")
    trace: str = _f("", doc="model=trace: engine trace JSONL to replay")


@dataclass
class CostConfig:
    model: str = _f("constant", choices=("constant", "linear", "knee", "roofline", "table"))
    step_s: float = _f(0.02, min=0.0, doc="constant: target step time (s); linear/knee: fixed part")
    per_token_s: float = _f(1e-4, min=0.0, doc="linear/knee: seconds per verified token in the batch")
    knee_tokens: int = _f(256, min=0, doc="knee: batch tokens verified at flat cost before growth")
    draft_step_s: float = _f(0.002, min=0.0, doc="one draft step for the whole batch (s)")
    prefill_s: float = _f(0.0, min=0.0, doc="per request admission (s)")
    prefill_per_token_s: float = _f(0.0, min=0.0, doc="per prompt token at admission (s)")
    prefill_call_s: float = _f(0.0, min=0.0, doc="per admission pass: one batched prefill forward of every "
                               "request joining at a step, whatever their number (s)")
    mixed_prefill_per_token_s: float = _f(-1.0, doc="server.admission = mixed: per prompt token of a join riding "
                                          "in a running batch's pass (s); negative = prefill_per_token_s "
                                          "(tetris validate fits it from a mixed calibration run)")
    draft_mode: str = _f("sequential", choices=("sequential", "parallel"))
    verify_layout: str = _f("", choices=("", "packed", "padded"),
                            doc="deprecated alias of server.verify_layout for the simulator side (\"\": not set)")
    hardware: str = _f("H100", doc="roofline: hardware preset")
    num_gpus: int = _f(4, min=1, doc="roofline: tensor-parallel degree")
    target_preset: str = _f("vicuna-33b", doc="roofline: target model preset")
    draft_preset: str = _f("vicuna-68m", doc="roofline: draft model preset")
    flops_efficiency: float = _f(0.6, min=1e-3, max=1.0)
    bandwidth_efficiency: float = _f(0.7, min=1e-3, max=1.0)
    overhead_s: float = _f(0.0, min=0.0, doc="roofline/table: fixed per-step overhead (s)")
    table: str = _f("", doc="table: profile CSV written by `tetris profile`")


LAYOUT_DEFAULT = {"sim": "packed", "engine": "padded"}  # server.verify_layout = "auto", per side
LAYOUT_ALIASES = {"sim": ("cost", "verify_layout"), "engine": ("engine", "verify_layout")}  # deprecated keys


@dataclass
class ServerConfig:
    max_batch: int = _f(64, min=1)
    replicas: int = _f(1, min=1)
    router: str = _f("round_robin", choices=("round_robin", "least_tokens"))
    verify_layout: str = _f("auto", choices=("auto",) + LAYOUTS,
                            doc="the target's verification pass over ragged windows L_i, in the simulator's cost model "
                                "and the engine's forwards alike: packed scores N + sum(L_i) tokens (linear layers on "
                                "real tokens only), padded N * (1 + max L_i) (right-padded to the longest row); auto = "
                                "packed in the simulator (simulate, sweep, plan), padded in the engine (engine, profile, "
                                "validate, calibrate)")
    scheduler: str = _f("simple", choices=("simple", "vllm"),
                        doc="simulator step scheduler: simple (admit up to max_batch, prefill priced on top of the "
                            "step, first token from the first decode step) or vllm (vLLM V1: a token budget per step "
                            "shared by decodes first, then prefill chunks; the prefill step emits the first token)")
    admission: str = _f("separate", choices=("separate", "mixed"),
                        doc="how requests joining a running batch are prefilled, in the native engine (tetris engine, serve) and the "
                            "simulator's simple scheduler alike: separate = each join is its own prefill pass "
                            "(target, then draft) before the step; mixed = joining prompts ride in the step's "
                            "verification pass (vLLM's mixed batch; the engine's draft prefill goes in the next "
                            "draft pass), so a join costs its prompt tokens but no pass of its own. With nothing "
                            "running a join is always its own pass. vLLM (backend and scheduler = vllm) always mixes")
    max_num_batched_tokens: int = _f(8192, min=1,
                                     doc="scheduler = vllm: tokens scheduled per step (vLLM's --max-num-batched-tokens; "
                                         "8192 = its `vllm serve` default on >= 70 GiB GPUs other than A100, 2048 on others)")
    chunked_prefill: bool = _f(True, doc="scheduler = vllm: split prompts over steps to fit the budget (vLLM "
                                         "--enable-chunked-prefill; off: a prompt waits for a step with room for it whole)")
    max_queue: int = _f(256, min=0, doc="tetris serve: requests waiting beyond the max_batch running ones; more get 429")
    shutdown_grace_s: float = _f(10.0, min=0.0,
                                 doc="tetris serve: seconds in-flight requests may take to finish after SIGINT/SIGTERM; "
                                     "then they end with an error")
    model_name: str = _f("", doc="tetris serve: the model id clients send (\"\" = derived from engine.pair)")


POLICIES = tuple(REGISTRY)  # the registered policies (theory/policies/__init__.py), in order


@dataclass
class PolicyConfig:
    name: str = _f("tetris", choices=POLICIES)
    k: int = _f(3, min=0, doc="window per request; capacity = k * batch for tetris/oracle")
    extra: int = _f(2, min=0, doc="tetris: extra drafted tokens; K = k + extra")
    budget: str = _f("fixed", choices=("fixed", "goodput", "unbounded"), doc="budget size: k*N, goodput-maximising, or every drafted token")
    tau: float = _f(0.3, min=0.0, max=1.0, doc="threshold: stop where cumulative score < tau")
    max_k: int = _f(8, min=1, doc="dsd / goodput: largest window considered")
    interval: int = _f(20, min=1, doc="dsd: steps between window re-choices")
    ema: float = _f(0.9, min=0.0, max=1.0, doc="dsd: EMA weight of the acceptance estimate")
    disable_batch: int = _f(0, min=0, doc="turn speculation off when batch > this (0: never)")
    early_stop: bool = _f(True, doc="tetris / threshold / fixed: stop drafting at the first depth no window "
                                     "reaches (the windows are unchanged, fewer draft passes; fixed: only past "
                                     "the requests' ends); false: always draft K")


@dataclass
class SloConfig:
    ttft_s: float = _f(0.0, min=0.0, doc="0 = no TTFT SLO")
    tpot_s: float = _f(0.0, min=0.0, doc="0 = no TPOT SLO")


@dataclass
class EngineConfig:
    backend: str = _f("native", choices=("native", "vllm"),
                      doc="native = this project's engine; vllm = vLLM's offline engine (docs/vllm.md; scripts/setup_vllm.sh)")
    pair: str = _f("", doc="folder holding target/ and draft/; empty = the committed pair")
    device: str = _f("cpu", choices=("cpu", "cuda"))
    temperature: float = _f(0.0, min=0.0, doc="0 = greedy")
    estimator: str = _f("auto", choices=("auto", "token_prob", "max_prob", "calibrated"))
    threads: int = _f(0, min=0, doc="torch threads (0 = torch default)")
    trace_out: str = _f("", doc="trace mode: write the acceptance trace here")
    clock: str = _f("wall", choices=("wall", "cpu"),
                    doc="timing clock: wall, or this process's CPU seconds (steady on a shared CPU; use threads = 1)")
    dtype: str = _f("auto", choices=("auto", "float32", "bfloat16"),
                    doc="the target's weights and compute (auto = bfloat16 on CUDA or on a CPU with AMX-BF16 / "
                        "AVX512-BF16, else float32; greedy identity with plain decoding is exact in float32 only)")
    draft_dtype: str = _f("auto", choices=("auto", "float32", "bfloat16"),
                          doc="the draft's weights and compute (auto = the target's, engine.dtype)")
    verify_layout: str = _f("", choices=("", "padded", "packed"),
                            doc="deprecated alias of server.verify_layout for the engine side (\"\": not set)")


@dataclass
class Config:
    seed: int = _f(1, min=0)
    workload: WorkloadConfig = _f(WorkloadConfig())
    acceptance: AcceptanceConfig = _f(AcceptanceConfig())
    cost: CostConfig = _f(CostConfig())
    server: ServerConfig = _f(ServerConfig())
    policy: PolicyConfig = _f(PolicyConfig())
    slo: SloConfig = _f(SloConfig())
    engine: EngineConfig = _f(EngineConfig())
    sweep: list = _f([], doc="sim: policy variants, inline tables laid over [policy] (label, k = \"best_fixed\" allowed)")


# ---------------------------------------------------------------- loading

def _coerce(value: Any, tp: Any, key: str, meta: dict) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, meta['choices']))}")
    if meta.get("min") is not None and value < meta["min"]:
        raise ConfigError(f"{key}: {value!r} is below the minimum {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise ConfigError(f"{key}: {value!r} is above the maximum {meta['max']}")
    return value


def build(cls, data: dict, prefix: str = ""):
    """Validate a plain dict (TOML table) into dataclass `cls`; errors name `prefix.key` (ConfigError)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else name
            raise ConfigError(f"{where}: unknown key (known: {', '.join(fields)})")
    obj = cls()
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):  # merge a partial table over the defaults
            merged = dataclasses.asdict(getattr(obj, name)) | (value if isinstance(value, dict) else {})
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
            value = merged
        setattr(obj, name, _coerce(value, tp, key, dict(fields[name].metadata)))
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """'workload.rate=5' -> (['workload', 'rate'], 5). The value is TOML; bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word such as tetris
    return key.split("."), value


def _nested_set(data: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = data.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a table")
        data = nxt
    data[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = (), base: dict | None = None) -> Config:
    """Build the resolved Config: defaults <- base dict <- TOML file <- --set overrides."""
    import copy

    data: dict = copy.deepcopy(base) if base else {}
    if path is not None:
        p = Path(path)
        text = read_text(p, "config file")
        try:
            file_data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {str(p)!r}: invalid TOML: {err}") from None
        _deep_merge(data, file_data)
    for text in overrides:
        keys, value = parse_override(text)
        _nested_set(data, keys, value)
    cfg = build(Config, data)
    check_layout_aliases(cfg)
    return cfg


_NOTED: set = set()  # deprecated keys already noted in this process


def check_layout_aliases(cfg: Config) -> None:
    """A one-line deprecation note on stderr per old layout key set (once per process); ConfigError
    when one contradicts an explicit server.verify_layout."""
    import sys

    one = cfg.server.verify_layout
    for section, key in LAYOUT_ALIASES.values():
        old = getattr(getattr(cfg, section), key)
        if not old:
            continue
        if one != "auto" and old != one:
            raise ConfigError(f"{section}.{key}: {old!r} contradicts server.verify_layout = {one!r} "
                              f"(the old key is a deprecated alias; set server.verify_layout only)")
        if (section, key) not in _NOTED:
            _NOTED.add((section, key))
            print(f"tetris: note: {section}.{key} is deprecated; use server.verify_layout (same values)", file=sys.stderr)


def verify_layout(cfg: Config, side: str) -> str:
    """The verification-pass layout ("packed" or "padded") on `side` ("sim": the simulator's cost
    model, "engine": the engine's forwards): server.verify_layout unless "auto"; else the side's
    deprecated alias (cost.verify_layout, engine.verify_layout) if set; else the side's default."""
    one = cfg.server.verify_layout
    if one != "auto":
        return one
    section, key = LAYOUT_ALIASES[side]
    return getattr(getattr(cfg, section), key) or LAYOUT_DEFAULT[side]


def with_layout(cfg: Config, side: str) -> Config:
    """cfg with server.verify_layout resolved for `side` (so another side runs the same pass)."""
    return dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, verify_layout=verify_layout(cfg, side)))


def _deep_merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value


def config_dict(config) -> dict:
    return dataclasses.asdict(config)


# ---------------------------------------------------------------- writing

def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(config) -> str:
    """The resolved config as TOML text (round-trips through load_config)."""
    data = config_dict(config) if dataclasses.is_dataclass(config) else config
    for section, key in LAYOUT_ALIASES.values():  # deprecated aliases are written only when set
        if isinstance(data.get(section), dict) and data[section].get(key) == "":
            data = data | {section: {k: v for k, v in data[section].items() if k != key}}
    top = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    lines = top[:]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"] + [f"{k} = {toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
