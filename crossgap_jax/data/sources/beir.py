"""Text source: BEIR (jsonl + qrels tsv) and NanoBEIR (parquet)."""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    open_text,
    read_jsonl,
)
from crossgap_jax.data.types import DataFileError, DatasetLayoutError, TextSplit

log = logging.getLogger(__name__)


NANOBEIR_NAMES: dict[str, str] = {
    "nanoclimatefever": "NanoClimateFEVER",
    "nanodbpedia": "NanoDBPedia",
    "nanofever": "NanoFEVER",
    "nanonfcorpus": "NanoNFCorpus",
    "nanonq": "NanoNQ",
    "nanoscidocs": "NanoSCIDOCS",
    "nanoscifact": "NanoSciFact",
}
BEIR_LAYOUT = (
    "BEIR:     <dir>/corpus.jsonl ({_id, title, text}), <dir>/queries.jsonl ({_id, text}),\n"
    "          <dir>/qrels/<split>.tsv (query-id, corpus-id, score; with header)\n"
    "NanoBEIR: <dir>/{corpus,queries,qrels}/*.parquet (the hub layout; columns _id, text /\n"
    "          query-id, corpus-id) or <dir>/{corpus,queries,qrels}.parquet; or relevance/\n"
    "          (query-id, positive-corpus-ids) instead of qrels/ (the -bm25 variants)"
)


def _parquet(d: str, what: str) -> str | None:
    for pat in (f"{what}/*.parquet", f"{what}.parquet", f"{what}-*.parquet",
                f"data/{what}-*.parquet", f"data/{what}/*.parquet"):
        hits = sorted(glob.glob(os.path.join(d, pat)))
        if hits:
            return hits[0]
    return None


def beir_format(d: str) -> str | None:
    """``"parquet"`` or ``"jsonl"`` if ``d`` holds a BEIR/NanoBEIR collection, else None."""
    if _parquet(d, "corpus") and _parquet(d, "queries") and (
        _parquet(d, "qrels") or _parquet(d, "relevance")
    ):
        return "parquet"
    if os.path.isfile(os.path.join(d, "corpus.jsonl")) and os.path.isfile(
        os.path.join(d, "queries.jsonl")
    ) and os.path.isdir(os.path.join(d, "qrels")):
        return "jsonl"
    return None


def beir_subdirs(hub_name: str) -> tuple[str, ...]:
    low = hub_name.lower()
    return (hub_name, low, f"nanobeir/{hub_name}", f"NanoBEIR/{hub_name}", f"beir/{low}")


def locate_beir(root: str, subdirs: Sequence[str]) -> str | None:
    for d in candidate_dirs(root, subdirs):
        if beir_format(d):
            return d
    return None


def _read_parquet(path: str) -> dict[str, list]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    return pq.read_table(path).to_pydict()


def _beir_file(d: str, name: str) -> str:
    path = os.path.join(d, name)
    if not os.path.isfile(path):
        have = sorted(os.listdir(d)) if os.path.isdir(d) else []
        raise DatasetLayoutError(f"BEIR folder {d}: missing file {name} (found: {have})\n"
                                 f"{BEIR_LAYOUT}")
    return path


def read_beir_qrels(path: str) -> tuple[dict[str, dict[str, int]], int, int]:
    """A BEIR qrels TSV: ``{query id: {corpus id: score}}``, the number of pairs read and
    how many of them repeated an earlier (query, corpus id) pair (the last score is kept,
    as BEIR's own loader does). A UTF-8 byte-order mark is dropped.

    The format: an optional header ``query-id<TAB>corpus-id<TAB>score``, then one judged
    pair per line, fields separated by tabs (a space *inside* a field is part of the id,
    never a separator). Trailing whitespace of a line is tolerated, as are blank lines.

    Raises:
        DataFileError: a line without three tab-separated fields, or a score that is not
            an integer; the message names ``path:line`` and shows the line.
    """
    qrels: dict[str, dict[str, int]] = {}
    pairs = duplicates = 0
    with open_text(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n").rstrip()
            if not line:
                continue
            parts = [p.strip() for p in line.split("\t")]
            if n == 1 and parts[:2] == ["query-id", "corpus-id"]:
                continue  # the header
            what = None
            if len(parts) != 3:
                what = (f"expected 3 tab-separated fields (query-id, corpus-id, score), found "
                        f"{len(parts)}")
                if len(parts) < 3 and len(line.split()) == 3:
                    what += " (the fields are separated by spaces, not tabs)"
            elif not parts[0] or not parts[1]:
                what = "an empty query-id or corpus-id"
            elif not parts[2].lstrip("-").isdigit():
                what = f"score {parts[2]!r} is not an integer"
            if what:
                raise DataFileError(f"{path}:{n}: {what}: {line[:80]!r}")
            docs = qrels.setdefault(parts[0], {})
            duplicates += parts[1] in docs
            docs[parts[1]] = int(parts[2])
            pairs += 1
    return qrels, pairs, duplicates


def load_beir(
    name: str,
    d: str,
    split: str,
    qrels_split: str = "test",
    include_title: bool = True,
    keep_unjudged_queries: bool = False,
) -> TextSplit:
    """A BEIR-style collection (folder ``d``): the ``corpus`` or the ``queries`` split.

    The queries split carries ``qrels`` (``{query id: {doc id: score}}``); queries
    without any judgement are dropped unless ``keep_unjudged_queries``. Items are the
    collection's own ids (as strings). A BEIR corpus text is ``title + " " + text``
    (``include_title``); NanoBEIR parquet corpora have a single text column.

    Args:
        name: dataset name for the split.
        d: the collection folder.
        split: ``"corpus"`` or ``"queries"``.
        qrels_split: which ``qrels/<split>.tsv`` of a BEIR folder (NanoBEIR has one file).
        include_title: prepend the title to BEIR corpus texts.
        keep_unjudged_queries: keep queries that have no qrels.
    """
    fmt = beir_format(d)
    if fmt is None:
        parts = {"corpus.jsonl": os.path.isfile(os.path.join(d, "corpus.jsonl")),
                 "queries.jsonl": os.path.isfile(os.path.join(d, "queries.jsonl")),
                 "qrels/": os.path.isdir(os.path.join(d, "qrels"))}
        if any(parts.values()):  # a BEIR folder with a file missing: name it
            missing = [k for k, ok in parts.items() if not ok]
            raise DatasetLayoutError(f"{name}: BEIR folder {d} is missing "
                                     f"{' and '.join(missing)}\n{BEIR_LAYOUT}")
        raise DatasetLayoutError(f"{name}: {d} is not a BEIR/NanoBEIR folder\n{BEIR_LAYOUT}")
    if split not in ("corpus", "queries"):
        raise bad_split(name, split, ["queries", "corpus"])
    if split == "corpus":
        if fmt == "parquet":
            t = _read_parquet(_parquet(d, "corpus"))  # type: ignore[arg-type]
            ids = [str(x) for x in t["_id"]]
            titles = t.get("title") or [""] * len(ids)
            texts = [str(x) for x in t["text"]]
        else:
            rows = [r for _, r in read_jsonl(_beir_file(d, "corpus.jsonl"), required=("_id",))]
            ids = [str(r["_id"]) for r in rows]
            titles = [r.get("title") or "" for r in rows]
            texts = [r.get("text") or "" for r in rows]
        if include_title:
            texts = [f"{ti} {te}".strip() if ti else te for ti, te in zip(titles, texts)]
        return TextSplit(name=name, split="corpus", items=ids, texts=texts, root=d)
    qrels: dict[str, dict[str, int]] = {}
    duplicates = 0
    if fmt == "parquet":
        t = _read_parquet(_parquet(d, "queries"))  # type: ignore[arg-type]
        q_ids, q_texts = [str(x) for x in t["_id"]], [str(x) for x in t["text"]]
        qrels_file = _parquet(d, "qrels")
        if qrels_file is not None:
            r = _read_parquet(qrels_file)
            scores = r.get("score") or [1] * len(r["query-id"])
            for q, doc, s in zip(r["query-id"], r["corpus-id"], scores):
                docs = qrels.setdefault(str(q), {})
                duplicates += str(doc) in docs
                docs[str(doc)] = int(s)
        else:  # sentence-transformers' NanoBEIR-bm25 variant: relevance/ with id lists
            r = _read_parquet(_parquet(d, "relevance"))  # type: ignore[arg-type]
            for q, docs in zip(r["query-id"], r["positive-corpus-ids"]):
                qrels[str(q)] = {str(doc): 1 for doc in docs}
    else:
        rows = [r for _, r in read_jsonl(_beir_file(d, "queries.jsonl"),
                                         required=("_id", "text"))]
        q_ids, q_texts = [str(r["_id"]) for r in rows], [str(r["text"]) for r in rows]
        tsv = os.path.join(d, "qrels", f"{qrels_split}.tsv")
        if not os.path.isfile(tsv):
            have = sorted(os.listdir(os.path.join(d, "qrels")))
            raise FileNotFoundError(f"{name}: no {tsv}; qrels files present: {have}")
        qrels, pairs, duplicates = read_beir_qrels(tsv)
        known = set(q_ids)
        unknown = [q for q in qrels if q not in known]
        if len(unknown) == len(qrels) and qrels:
            raise DataFileError(
                f"{tsv}: none of its {len(qrels)} query ids is in queries.jsonl (e.g. qrels "
                f"{unknown[:3]} vs queries {q_ids[:3]}); the files do not belong together")
        log.info("%s: %s: %d judged queries, %d (query, document) pairs (%d query ids not in "
                 "queries.jsonl)", name, tsv, len(qrels) - len(unknown), pairs, len(unknown))
    keep = [i for i, q in enumerate(q_ids) if keep_unjudged_queries or q in qrels]
    kept = {q_ids[i]: qrels.get(q_ids[i], {}) for i in keep}
    return TextSplit(
        name=name, split="queries", items=[q_ids[i] for i in keep],
        texts=[q_texts[i] for i in keep], qrels=kept, root=d,
        extra={"judged_queries": sum(1 for v in kept.values() if v),
               "judged_pairs": sum(len(v) for v in kept.values()),
               "unjudged_queries_dropped": len(q_ids) - len(keep),
               "qrels_duplicate_pairs": duplicates},
    )
