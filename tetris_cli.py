"""The `tetris` command: one argparse tree; each part adds its own subcommands.

Parts register lazily (their heavy imports happen inside the command), so
`tetris simulate` never imports torch.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# module path -> provides `add_commands(subparsers)`
_PARTS = ("theory.cli", "sim.cli", "engine.cli", "engine.lossless_cli", "engine.smollm.cli", "analysis.cli")


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
    from theory.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"tetris {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
