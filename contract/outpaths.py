"""Output paths, checked before any work starts: a run never deletes what it did not write.

    out = check_out_dir(args.out, force=args.force, flag="--out")     # run folders
    path = check_out_file(args.out, flag="--out")                      # single output files
    cfg_text = read_text(path, what="config file")                     # one-line errors, no tracebacks

Rules (ConfigError, exit 2, one line, before anything runs):
- an existing FILE is never replaced by a run folder;
- an existing folder is replaced only if it is a previous run folder of this tool
  (it holds the `.tetris-run` marker, or only the kinds of files this tool writes)
  AND --force is given; a folder of other files is never touched;
- `--out .` / the current folder or one of its parents, and an input folder, are refused;
- the parent must be (or be creatable as) a writable folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from contract.errors import ConfigError

MARKER = ".tetris-run"  # written into every run folder by contract.runs.atomic_folder
RUN_SUFFIXES = (".json", ".jsonl", ".csv", ".md", ".toml", ".png")  # files this tool writes in a run folder
RUN_DIRS = ("points",)  # folders this tool writes in a run folder (the plan's sweep cache)


def default_run_folder(name: str) -> Path:
    """Where a run goes when --out is not given: runs/<YYYYmmdd-HHMMSS>-<name> (a new folder each time)."""
    import time

    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"


def is_run_folder(path: Path) -> bool:
    """True if `path` is a folder this tool wrote: marker present, or (older runs) only run-file kinds."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        entries = list(path.iterdir())
    except OSError:
        return False
    if not entries:
        return False
    for e in entries:
        if e.name == MARKER:
            continue
        if e.is_dir() and e.name in RUN_DIRS:
            continue
        if e.is_file() and e.suffix in RUN_SUFFIXES:
            continue
        return False
    return True


def _check_parent(path: Path, flag: str) -> None:
    """The first existing ancestor of `path` must be a writable folder."""
    parent = path.parent
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"{flag} {str(path)!r}: {str(parent)!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {str(path)!r}: folder {str(parent)!r} is not writable")


def check_out_dir(out, force: bool = False, flag: str = "--out", inputs=(), resume: bool = False) -> Path:
    """Validate a run-folder destination before the run; returns it as a Path.

    resume=True (the plan's cache folder): an existing run folder is reused in place
    without --force (nothing in it is deleted)."""
    if out is None or str(out).strip() == "":
        raise ConfigError(f"{flag}: expected a folder path")
    out = Path(out)
    try:
        full = out.resolve()
        cwd = Path.cwd().resolve()
    except OSError as err:
        raise ConfigError(f"{flag} {str(out)!r}: {err.strerror or err}") from None
    if full == cwd or full in cwd.parents or full.parent == full:
        raise ConfigError(f"{flag} {str(out)!r}: is the current folder or one of its parents; name a new folder")
    for inp in inputs:
        try:
            if Path(inp).resolve() == full:
                raise ConfigError(f"{flag} {str(out)!r}: is one of the input folders; name a new folder")
        except OSError:
            continue
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ConfigError(f"{flag} {str(out)!r}: exists and is not a folder; refusing to replace it")
        if not is_run_folder(out):
            if not any(out.iterdir()):
                return out  # an empty folder: nothing to lose
            raise ConfigError(f"{flag} {str(out)!r}: exists and is not a run folder of this tool; "
                              "refusing to touch it (name a new folder)")
        if resume:
            return out
        if not force:
            raise ConfigError(f"{flag} {str(out)!r}: exists (a previous run folder); pass --force to replace it")
        if not os.access(out.parent if str(out.parent) else ".", os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {str(out)!r}: folder {str(out.parent)!r} is not writable")
        return out
    _check_parent(out, flag)
    return out


def check_out_file(path, flag: str, force: bool = True) -> Path:
    """Validate a single output file before the run: not a folder, parent writable.
    An existing regular file is replaced only when force is True (the default for files
    the user names explicitly, like `-o` of other tools)."""
    if path is None or str(path).strip() == "":
        raise ConfigError(f"{flag}: expected a file path")
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {str(path)!r}: is a folder; expected a file path")
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{flag} {str(path)!r}: exists and is not a regular file")
        if not force:
            raise ConfigError(f"{flag} {str(path)!r}: exists; pass --force to replace it")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {str(path)!r}: folder {str(path.parent)!r} is not writable")
        return path
    _check_parent(path, flag)
    return path


def check_in_file(path, what: str) -> Path:
    """An input file that must exist and be a regular, readable file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(p)!r}: is a folder, not a file")
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} not found")
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r}: not a regular file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{what} {str(p)!r}: permission denied")
    return p


def read_text(path, what: str = "file") -> str:
    """UTF-8 text of an input file, with one-line errors."""
    p = check_in_file(path, what)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(p)!r}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{what} {str(p)!r}: {err.strerror or err}") from None
