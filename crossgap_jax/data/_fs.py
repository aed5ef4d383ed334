"""Small file-system helpers shared by the layout readers: finding dataset folders."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

from crossgap_jax.data.core import DatasetLayoutError

ENV_VAR = "CROSSGAP_SHARED_DATA"


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


def find_dataset_dir(
    root: str,
    subdirs: Sequence[str],
    accept: Callable[[str], bool],
) -> str | None:
    """The first of :func:`candidate_dirs` for which ``accept(dir)`` is true, else None."""
    for d in candidate_dirs(root, subdirs):
        if accept(d):
            return d
    return None


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


def read_lines(path: str, encoding: str = "utf-8") -> list[str]:
    """The non-empty lines of a text file, stripped."""
    with open(path, encoding=encoding) as f:
        return [ln.strip() for ln in f if ln.strip()]
