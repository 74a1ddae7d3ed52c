"""The `tetris` command: one argparse tree; each part adds its own subcommands.

Parts register lazily (their heavy imports happen inside the command), so
`tetris simulate` never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import signal
import sys
import threading
import time

# module path -> provides `add_commands(subparsers)`
_PARTS = ("contract.cli", "sim.cli", "engine.cli", "engine.lossless_cli", "engine.smollm.cli", "engine.http.cli",
          "analysis.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tetris", description="Batched speculative decoding with TETRIS draft-token selection."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _PARTS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # part has no CLI yet
                continue
            raise
        mod.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from contract.config import ConfigError

    previous = _on_sigterm()
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"tetris {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except OSError as err:  # a file-system error no check caught: one line, never a traceback
        where = f" {err.filename!r}" if getattr(err, "filename", None) else ""
        print(f"tetris {args.command}: error:{where} {err.strerror or err}", file=sys.stderr)
        return 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so every `finally` / atomic_folder cleans its temporary files."""


TERM_GRACE_S = 20.0  # after SIGTERM, seconds the normal clean-up may take before the watchdog ends the process


def _raise_terminated(signum, frame):
    # Python reports and DROPS an exception raised while a __del__ or a finalizer happens to run
    # (the signal can land there), and the run would go on. So a watchdog thread makes sure:
    # past the grace time it removes the live temporary run folders and ends the process (143).
    grace = float(os.environ.get("TETRIS_TERM_GRACE_S", TERM_GRACE_S))
    threading.Thread(target=_watchdog, args=(grace,), daemon=True).start()
    raise Terminated()


def _watchdog(grace: float) -> None:
    time.sleep(grace)
    from contract.runs import LIVE_TEMPORARY

    for tmp in list(LIVE_TEMPORARY):
        shutil.rmtree(tmp, ignore_errors=True)
    print("terminated", file=sys.stderr, flush=True)
    os._exit(143)


def _on_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one or None."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        return None


if __name__ == "__main__":
    sys.exit(main())
