"""Run many configs through one function on Dask, one result file per config.

    results = run_sweep(configs, fn, "results/")   # fn(Config) -> JSON-able dict

Each config is resolved to a contract.config.Config; its key is the SHA-256 of the
resolved TOML (so two spellings of one config share a key). A finished config is
written to results/<key>.json (temp name + rename, so a file is whole or absent).
Restarting a killed sweep skips every key already on disk: nothing is lost and
nothing runs twice. The client writes the files, so workers of a remote cluster
(`scheduler="tcp://HOST:PORT"`) need no shared disk.

Schedulers: None -> an embedded distributed.LocalCluster on all local cores;
"tcp://..." -> an existing cluster; "serial" -> in this process, no Dask.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from contract.config import Config, ConfigError, load_config, to_toml


def resolve(item: Any, base_path: str | None = None) -> Config:
    """Config | nested dict (over the defaults / base file) | list of 'key=value' overrides."""
    if isinstance(item, Config):
        return item
    if isinstance(item, dict):
        return load_config(base_path, base=item) if base_path is None else _dict_over_file(base_path, item)
    if isinstance(item, (list, tuple)):
        return load_config(base_path, list(item))
    raise ConfigError(f"sweep: cannot make a config from {type(item).__name__}")


def _dict_over_file(path: str, data: dict) -> Config:
    overrides = [f"{k}={_toml_literal(v)}" for k, v in _flatten(data)]
    return load_config(path, overrides)


def _flatten(data: dict, prefix: str = ""):
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, key + ".")
        else:
            yield key, v


def _toml_literal(v: Any) -> str:
    from contract.config import toml_value

    return toml_value(v)


def config_key(config: Config) -> str:
    """Stable key of a resolved config: first 16 hex digits of SHA-256 of its TOML."""
    return hashlib.sha256(to_toml(config).encode()).hexdigest()[:16]


def code_version(parts=("sim", "theory")) -> str:
    """First 12 hex digits of SHA-256 over the sources of `parts`: name a cache folder with it so
    results computed by another version of the simulator are never reused."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for part in parts:
        for p in sorted((root / part).rglob("*")):
            if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(root)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()[:12]


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder, then rename: whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_result(out_dir: str | Path, key: str) -> dict | None:
    """The stored result for `key`, or None if absent or unreadable (then it reruns)."""
    path = Path(out_dir) / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())["result"]
    except (json.JSONDecodeError, KeyError, OSError):
        return None


def _call(fn: Callable, toml_text: str) -> Any:
    """Worker side: rebuild the Config from its TOML (small, picklable) and run fn."""
    import tomllib

    config = load_config(base=tomllib.loads(toml_text))
    return fn(config)


def make_client(scheduler: str | None = None, n_workers: int | None = None, processes: bool = True):
    """A distributed.Client: to `scheduler` if given, else on an embedded LocalCluster."""
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://")):
            raise ConfigError(f"--scheduler {scheduler!r}: expected tcp://HOST:PORT")
        try:
            return Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as err:
            raise ConfigError(f"--scheduler {scheduler!r}: cannot connect ({err.__class__.__name__})") from None
    n = n_workers or os.cpu_count() or 1
    cluster = LocalCluster(
        n_workers=n if processes else 1,
        threads_per_worker=1 if processes else n,
        processes=processes,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    return Client(cluster)


def run_sweep(
    configs: Iterable[Any],
    fn: Callable[[Config], Any],
    out_dir: str | Path,
    *,
    scheduler: str | None = None,
    client=None,
    n_workers: int | None = None,
    processes: bool = True,
    base_path: str | None = None,
    progress: bool = True,
    desc: str = "sweep",
    tally: dict | None = None,
) -> dict[str, Any]:
    """Run fn on every config not yet in out_dir; return {key: result} for all of them.

    `fn` must be importable by the workers (a module-level function). Results are
    written as they finish, so a killed sweep keeps every finished config.
    tally (optional dict) gets "cached" and "computed" counts added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo: dict[str, str] = {}
    results: dict[str, Any] = {}
    order: list[str] = []
    for item in configs:
        config = resolve(item, base_path)
        key = config_key(config)
        if key in results or key in todo:
            continue
        order.append(key)
        stored = load_result(out, key)
        if stored is not None:
            results[key] = stored
        else:
            todo[key] = to_toml(config)
    if tally is not None:
        tally["cached"] = tally.get("cached", 0) + len(results)
        tally["computed"] = tally.get("computed", 0) + len(todo)
    if todo:
        _run(todo, fn, out, results, scheduler, client, n_workers, processes, progress, desc)
    return {k: results[k] for k in order}


def _store(out: Path, key: str, toml_text: str, result: Any) -> None:
    atomic_write_text(out / f"{key}.json", json.dumps({"key": key, "config": toml_text, "result": result}, indent=1))


def _run(todo, fn, out, results, scheduler, client, n_workers, processes, progress, desc):
    from tqdm import tqdm

    tty = sys.stderr.isatty()  # not a TTY: one progress line every 10 s instead of none
    bar = tqdm(total=len(todo), desc=desc, file=sys.stderr, disable=not progress, leave=False,
               mininterval=0.1 if tty else 10.0, delay=0 if tty else 10.0)
    try:
        if scheduler == "serial":
            for key, text in todo.items():
                results[key] = _call(fn, text)
                _store(out, key, text, results[key])
                bar.update()
            return
        own = client is None
        if own:
            client = make_client(scheduler, n_workers, processes)
        try:
            from distributed import as_completed

            futures = {client.submit(_call, fn, text, key=f"{desc}-{key}", pure=False): key for key, text in todo.items()}
            for fut in as_completed(futures):
                key = futures[fut]
                results[key] = fut.result()
                _store(out, key, todo[key], results[key])
                bar.update()
        finally:
            if own:
                cluster = getattr(client, "cluster", None)
                client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        bar.close()
