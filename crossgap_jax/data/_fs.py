"""Small file-system helpers shared by the layout readers: finding dataset folders."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import IO, Any

from crossgap_jax.data.types import DataFileError, DatasetLayoutError

ENV_VAR = "CROSSGAP_SHARED_DATA"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def list_images(folder: str) -> list[str]:
    """The sorted names of the image files (by extension) directly inside ``folder``."""
    with os.scandir(folder) as it:
        return sorted(
            e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )


def bad_split(name: str, split: str, valid: Sequence[str]) -> ValueError:
    """The error for a split name a reader does not know; it lists the valid ones."""
    return ValueError(f"{name}: unknown split {split!r}; valid splits: {', '.join(valid)}")


def resolve_root(root: str | os.PathLike | None) -> str:
    """The data root: ``root`` if given, else ``$CROSSGAP_SHARED_DATA``.

    Raises:
        ValueError: neither is set.
    """
    if root is None:
        root = os.environ.get(ENV_VAR)
        if not root:
            raise ValueError(f"no data root: pass root=... or set the {ENV_VAR} variable")
    return os.path.abspath(os.path.expanduser(os.fspath(root)))


def child_ci(parent: str, name: str) -> str | None:
    """``parent/name`` if it exists, matching ``name`` case-insensitively; else None.

    ``name`` may contain ``/``; each component is matched separately.
    """
    cur = parent
    for part in name.split("/"):
        if not part:
            continue
        exact = os.path.join(cur, part)
        if os.path.exists(exact):
            cur = exact
            continue
        try:
            entries = os.listdir(cur)
        except OSError:
            return None
        low = part.lower()
        match = sorted(e for e in entries if e.lower() == low)
        if not match:
            return None
        cur = os.path.join(cur, match[0])
    return cur


def candidate_dirs(root: str, subdirs: Sequence[str]) -> list[str]:
    """``root`` itself, then ``root/<subdir>`` for each existing sub-folder (case-insensitive)."""
    out = [root]
    for s in subdirs:
        d = child_ci(root, s)
        if d is not None and os.path.isdir(d) and d not in out:
            out.append(d)
    return out


def looked_for(root: str, subdirs: Iterable[str], markers: Iterable[str]) -> str:
    """A readable list of the places a layout reader searched, for error messages."""
    bases = [root] + [os.path.join(root, s) for s in subdirs]
    marks = ", ".join(markers)
    return "\n".join(f"  {b}/{{{marks}}}" for b in bases)


def layout_error(name: str, root: str, searched: str, layout: str) -> DatasetLayoutError:
    """A :class:`DatasetLayoutError` naming what was looked for and the expected layout."""
    return DatasetLayoutError(
        f"dataset {name!r} not found under {root}.\nLooked for:\n{searched}\n"
        f"Expected layout:\n{layout.rstrip()}"
    )


def open_text(path: str | os.PathLike, newline: str | None = None) -> IO[str]:
    """``path`` opened for reading as UTF-8 text, a leading byte-order mark dropped.

    Every text file the readers take in (qrels TSV, JSON / JSONL, split and annotation
    files, caption and class-name files) goes through here: an editor's UTF-8 BOM would
    otherwise become part of the first id (``"\\ufeffq1"`` matches no query).
    ``newline``: as for :func:`open` (``""`` for the ``csv`` module).
    """
    return open(path, encoding="utf-8-sig", newline=newline)


def read_lines(path: str) -> list[str]:
    """The non-empty lines of a text file (UTF-8, BOM dropped), stripped."""
    with open_text(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


def read_json(path: str) -> Any:
    """One JSON document from ``path``.

    Raises:
        FileNotFoundError: no such file (named).
        DataFileError: not valid JSON (names the file, line and column) or empty.
    """
    with open_text(path) as f:
        text = f.read()
    if not text.strip():
        raise DataFileError(f"{path}: the file is empty (expected a JSON document)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column "
                            f"{e.colno}); was the file cut short or edited by hand?") from e


def read_jsonl(path: str, required: Sequence[str] = ()) -> list[tuple[int, dict]]:
    """The records of a JSON Lines file as ``(line number, object)`` pairs.

    Blank lines are skipped. Each other line must be one JSON object holding the
    ``required`` keys.

    Raises:
        FileNotFoundError: no such file.
        DataFileError: an empty file (no records), a line that is not JSON, not an object
            or lacks a required key; the message names ``path:line``, shows the start of the
            line and says what was expected.
    """
    out: list[tuple[int, dict]] = []
    with open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            show = line.strip()
            show = show if len(show) <= 80 else show[:77] + "..."
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFileError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}): "
                                    f"{show!r}; each line must be one JSON object") from e
            if not isinstance(rec, dict):
                raise DataFileError(f"{path}:{n}: expected a JSON object per line, got "
                                    f"{type(rec).__name__}: {show!r}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise DataFileError(f"{path}:{n}: no {', '.join(map(repr, missing))} field "
                                    f"(has {sorted(rec)}): {show!r}")
            out.append((n, rec))
    if not out:
        raise DataFileError(f"{path}: no records (the file is empty or blank); expected one "
                            f"JSON object per line" + (f" with {', '.join(map(repr, required))}"
                                                       if required else ""))
    return out
