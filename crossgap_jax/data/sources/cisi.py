"""Text source: CISI (Glasgow IR collection): CISI.ALL, CISI.QRY, CISI.REL."""

from __future__ import annotations

import logging
import os
import re

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    looked_for,
)
from crossgap_jax.data.types import TextSplit

log = logging.getLogger(__name__)


CISI_LAYOUT = "<root>/cisi/{CISI.ALL, CISI.QRY, CISI.REL}"
_CISI_FIELD = re.compile(r"^\.([A-Z])\s*$")


def locate_cisi(root: str) -> str | None:
    for d in candidate_dirs(root, ("cisi",)):
        if all(os.path.isfile(os.path.join(d, f)) for f in ("CISI.ALL", "CISI.QRY", "CISI.REL")):
            return d
    return None


def _parse_cisi(path: str) -> list[tuple[str, dict[str, str]]]:
    """Records ``(id, {field letter: text})`` of a SMART-format file (``.I``, ``.T``...)."""
    records: list[tuple[str, dict[str, list[str]]]] = []
    field = None
    with open(path, encoding="latin-1") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith(".I ") or line.strip() == ".I":
                records.append((line[2:].strip(), {}))
                field = None
                continue
            m = _CISI_FIELD.match(line)
            if m:
                field = m.group(1)
                records[-1][1].setdefault(field, [])
            elif field is not None and records:
                records[-1][1][field].append(line)
    return [(i, {k: " ".join(" ".join(v).split()) for k, v in fs.items()}) for i, fs in records]


def load_cisi(root: str, split: str = "corpus", keep_unjudged_queries: bool = False) -> TextSplit:
    """CISI: ``corpus`` (1,460 documents: title + abstract) or ``queries`` (with qrels).

    Of the 112 queries only 76 have relevance judgements; the others are dropped unless
    ``keep_unjudged_queries``. Items are the ``.I`` ids as strings.
    """
    d = locate_cisi(root)
    if d is None:
        searched = looked_for(root, ("cisi",), ["CISI.ALL", "CISI.QRY", "CISI.REL"])
        raise layout_error("cisi", root, searched, CISI_LAYOUT)
    if split == "corpus":
        recs = _parse_cisi(os.path.join(d, "CISI.ALL"))
        texts = [" ".join(x for x in (f.get("T", ""), f.get("W", "")) if x) for _, f in recs]
        return TextSplit(name="cisi", split="corpus", items=[i for i, _ in recs], texts=texts,
                         root=d)
    if split != "queries":
        raise bad_split("cisi", split, ["queries", "corpus"])
    recs = _parse_cisi(os.path.join(d, "CISI.QRY"))
    qrels: dict[str, dict[str, int]] = {}
    with open(os.path.join(d, "CISI.REL"), encoding="latin-1") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                qrels.setdefault(parts[0], {})[parts[1]] = 1
    keep = [(i, f) for i, f in recs if keep_unjudged_queries or i in qrels]
    return TextSplit(
        name="cisi", split="queries", items=[i for i, _ in keep],
        texts=[" ".join(x for x in (f.get("T", ""), f.get("W", "")) if x) for _, f in keep],
        qrels={i: qrels.get(i, {}) for i, _ in keep}, root=d,
    )
