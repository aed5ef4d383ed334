"""Text source: Generic JSONL of texts with labels; replacement texts."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from crossgap_jax.data._fs import (
    open_text,
    read_jsonl,
)
from crossgap_jax.data.types import DataFileError, DatasetLayoutError, TextSplit

log = logging.getLogger(__name__)


JSONL_LAYOUT = (
    "<file>.jsonl, or <folder>/<split>.jsonl: one JSON object per line with 'text' and\n"
    "optionally 'label' (int or class name) and 'id' (else the line number is the id)"
)


def load_jsonl(root: str, split: str = "all") -> TextSplit:
    """Texts with labels from a JSONL file (``root``) or ``<root>/<split>.jsonl``.

    String labels become indices into the sorted class names; int labels are kept (class
    names are then None unless a ``classname`` field is present).
    """
    path = root if os.path.isfile(root) else os.path.join(root, f"{split}.jsonl")
    if not os.path.isfile(path):
        raise DatasetLayoutError(f"jsonl: no file {path}\n{JSONL_LAYOUT}")
    numbered = read_jsonl(path, required=("text",))
    rows = [r for _, r in numbered]
    items = [str(r.get("id", r.get("_id", i))) for i, r in enumerate(rows)]
    texts = [str(r["text"]) for r in rows]
    labelled = [n for n, r in numbered if "label" in r]
    if labelled and len(labelled) < len(rows):
        first = next(n for n, r in numbered if "label" not in r)
        raise DataFileError(f"{path}:{first}: no 'label' field, but {len(labelled)} of the "
                            f"{len(rows)} records have one; label every record or none")
    labels = classnames = None
    if labelled:
        raw = [r["label"] for r in rows]
        if all(isinstance(x, str) for x in raw):
            classnames = sorted(set(raw))
            lab = {c: i for i, c in enumerate(classnames)}
            labels = np.array([lab[x] for x in raw], np.int64)
        else:
            labels = np.array([int(x) for x in raw], np.int64)
            if all("classname" in r for r in rows):
                names = {int(r["label"]): str(r["classname"]) for r in rows}
                classnames = [names.get(i, "") for i in range(max(names) + 1)]
    return TextSplit(name="jsonl", split=split, items=items, texts=texts, labels=labels,
                     classnames=classnames, root=path)


def load_text_replacements(path: str | os.PathLike) -> dict[str, str]:
    """A mapping ``{item: replacement text}`` from a JSON object or a JSONL file.

    JSONL lines need an id (``id``, ``_id`` or ``item``) and a text (``text`` or
    ``summary``). Use it with :meth:`TextSplit.with_texts`. (The authors' summary pickles,
    which replace every gallery text of nine datasets, are read by
    :mod:`crossgap_jax.data.authors_assets`.)
    """
    path = os.fspath(path)
    with open_text(path) as f:
        content = f.read()
    try:
        data = json.loads(content)
    except json.JSONDecodeError:
        data = None  # not one JSON document: read it as JSONL
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{item: text}} or JSONL lines")
    if isinstance(data, dict) and not ({"id", "_id", "item"} & set(data)):
        return {str(k): str(v) for k, v in data.items()}
    out = {}
    for n, line in enumerate(content.splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFileError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno}); "
                                "expected a JSON object {item: text} or one JSON object per "
                                "line") from e
        if not isinstance(r, dict):
            raise DataFileError(f"{path}:{n}: expected a JSON object per line")
        key = next((r[k] for k in ("id", "_id", "item") if k in r), None)
        val = next((r[k] for k in ("text", "summary") if k in r), None)
        if key is None or val is None:
            raise ValueError(f"{path}:{n}: need an id/_id/item and a text/summary field")
        out[str(key)] = str(val)
    if not out:
        raise DataFileError(f"{path}: no replacement texts (the file is empty); expected a "
                            "JSON object {item: text} or one JSON object per line")
    return out
