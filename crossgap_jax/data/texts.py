"""Readers for the text datasets of the paper (and CISI, a small real qrels collection).

Every reader returns a :class:`~crossgap_jax.data.core.TextSplit` of raw strings.
Tokenisation (and truncation to CLIP's 77-token context) happens in the model layer.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence

import numpy as np

from crossgap_jax.data._fs import (
    candidate_dirs,
    layout_error,
    looked_for,
    read_json,
    read_jsonl,
)
from crossgap_jax.data.core import DataFileError, DatasetLayoutError, TextSplit

log = logging.getLogger(__name__)


def _bad_split(name: str, split: str, valid: Sequence[str]) -> ValueError:
    return ValueError(f"{name}: unknown split {split!r}; valid splits: {', '.join(valid)}")


# --------------------------------------------------------------------------------------
# Captions: Karpathy json, one-caption-per-line files, NoCaps (COCO-format json)


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    """Where the captions of one caption dataset may be found."""

    name: str
    subdirs: tuple[str, ...]
    karpathy_json: str | None  # Karpathy's dataset_<x>.json (all splits in one file)
    coco_json: Mapping[str, str]  # split -> COCO-format caption json (NoCaps)
    txt_files: Mapping[str, tuple[str, ...]]  # split -> one-caption-per-line file names
    splits: tuple[str, ...]
    captions_per_image: int | None  # default cap on captions per image (None: all)


CAPTION_SPECS: dict[str, CaptionSpec] = {
    s.name: s
    for s in [
        CaptionSpec(
            "coco_text", ("coco_karpathy", "coco", "karpathy", "coco/annotations", "data"),
            "dataset_coco.json", {},
            {"test": ("test5k_captions.txt", "testall_caps.txt", "coco_test5k_captions.txt")},
            ("test", "val", "train"), None,
        ),
        CaptionSpec(
            "flickr30k_text", ("flickr30k", "f30k", "flickr30k_karpathy", "karpathy", "data"),
            "dataset_flickr30k.json", {},
            {"val": ("val_captions.txt", "dev_caps.txt"), "test": ("test_captions.txt",
                                                                   "test_caps.txt")},
            ("val", "test", "train"), None,
        ),
        CaptionSpec(
            "nocaps_text", ("nocaps", "nocaps/annotations", "data"), None,
            {"val": "nocaps_val_4500_captions.json"}, {"val": ("val_captions.txt",)},
            ("val",), None,
        ),
    ]
}


LINES_PER_IMAGE = 5  # one-caption-per-line files: consecutive lines per image by default


def caption_layout(spec: CaptionSpec) -> str:
    lines = []
    if spec.karpathy_json:
        lines.append(f"<root>/{spec.subdirs[0]}/{spec.karpathy_json}  (Karpathy split file)")
    for split, f in spec.coco_json.items():
        lines.append(f"<root>/{spec.subdirs[0]}/{f}  (COCO-format captions, split {split})")
    for split, files in spec.txt_files.items():
        lines.append(
            f"<root>/{spec.subdirs[0]}/{{{','.join(files)}}}  (split {split}: one caption per "
            "line, consecutive lines per image)"
        )
    return "\n".join(lines)


def _caption_sources(spec: CaptionSpec, root: str, split: str) -> list[tuple[str, str]]:
    """``(kind, path)`` candidates in preference order; kind: karpathy, coco, txt."""
    out = []
    for d in candidate_dirs(root, spec.subdirs):
        if spec.karpathy_json:
            out.append(("karpathy", os.path.join(d, spec.karpathy_json)))
        if split in spec.coco_json:
            out.append(("coco", os.path.join(d, spec.coco_json[split])))
        generic = (f"{split}_captions.txt", f"{split}_caps.txt")
        for f in tuple(spec.txt_files.get(split, ())) + generic:
            out.append(("txt", os.path.join(d, f)))
    return out


def locate_captions(spec: CaptionSpec, root: str, split: str | None = None) -> str | None:
    for split_ in [split] if split else spec.splits:
        for _, path in _caption_sources(spec, root, split_):
            if os.path.isfile(path):
                return path
    return None


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _grouped_split(
    name: str, split: str, keys: list[str], caps: list[list[str]], cap: int | None, root: str,
    extra: dict | None = None,
) -> TextSplit:
    items, texts, groups = [], [], []
    for g, (key, cs) in enumerate(zip(keys, caps)):
        for k, c in enumerate(cs[:cap] if cap else cs):
            items.append(f"{key}#{k}")
            texts.append(c)
            groups.append(g)
    return TextSplit(name=name, split=split, items=items, texts=texts,
                     groups=np.array(groups, np.int64), root=root,
                     extra=dict(extra or {}, image_keys=keys))


def load_captions(
    spec: CaptionSpec,
    root: str,
    split: str,
    captions_per_image: int | None | str = "default",
    captions_file: str | None = None,
) -> TextSplit:
    """All captions of one split, grouped by image (``groups`` = image index).

    Items are ``"<image>#<k>"``: ``<image>`` is the image file stem for json sources, the
    zero-padded image index for line files; ``k`` is the caption's rank for that image.

    Args:
        spec: the dataset's :class:`CaptionSpec`.
        root: data root or dataset folder.
        split: a split of ``spec.splits``.
        captions_per_image: keep at most this many captions per image (``None``: all);
            for line files, the number of consecutive lines per image. ``"default"``:
            every caption of every image, as the authors do (some COCO images have 6 or 7
            in the Karpathy json; Flickr30k has 5, NoCaps 10); line files, which cannot
            say where an image's captions end, are read as 5 lines per image.
        captions_file: read this file instead of searching (json or txt, by extension).
    """
    if split not in spec.splits:
        raise _bad_split(spec.name, split, spec.splits)
    cap = spec.captions_per_image if captions_per_image == "default" else captions_per_image
    if captions_file is not None:
        path = captions_file if os.path.isabs(captions_file) else os.path.join(root, captions_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{spec.name}: captions file not found: {path}")
        kind = "txt" if path.endswith(".txt") else None
    else:
        found = [(k, p) for k, p in _caption_sources(spec, root, split) if os.path.isfile(p)]
        if not found:
            searched = "\n".join(f"  {p}" for _, p in _caption_sources(spec, root, split))
            raise layout_error(spec.name, root, searched, caption_layout(spec))
        kind, path = found[0]
    if kind is None:
        data = read_json(path)
        kind = "coco" if "annotations" in data else "karpathy"
    else:
        data = None
    if kind == "txt":
        per = cap or LINES_PER_IMAGE
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if len(lines) % per:
            raise ValueError(f"{path}: {len(lines)} lines is not a multiple of {per} per image")
        n = len(lines) // per
        width = max(5, len(str(n - 1)))
        keys = [f"{i:0{width}d}" for i in range(n)]
        caps = [lines[i * per : (i + 1) * per] for i in range(n)]
        return _grouped_split(spec.name, split, keys, caps, per, path)
    if data is None:
        data = read_json(path)
    if kind == "karpathy":
        want = {"train": {"train", "restval"}}.get(split, {split})
        images = [im for im in data["images"] if im.get("split") in want]
        if not images:
            raise ValueError(f"{path}: no images with split {split!r}")
        keys = [_stem(im["filename"]) for im in images]
        caps = [[s["raw"].strip() for s in im["sentences"]] for im in images]
        return _grouped_split(spec.name, split, keys, caps, cap, path)
    # COCO-format (NoCaps): images + annotations
    by_image: dict[int, list[tuple[int, str]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a.get("id", 0), a["caption"].strip()))
    images = [im for im in data["images"] if im["id"] in by_image]
    keys = [_stem(im["file_name"]) for im in images]
    caps = [[c for _, c in sorted(by_image[im["id"]], key=lambda t: t[0])] for im in images]
    extra = {"domains": [im.get("domain") for im in images]}
    return _grouped_split(spec.name, split, keys, caps, cap, path, extra)


def first_caption_split(split: TextSplit) -> tuple[TextSplit, TextSplit]:
    """The paper's caption protocol: ``(first caption of each image, all other captions)``.

    Both halves keep ``groups`` (the image index), so relevance is "same group".
    """
    assert split.groups is not None, "captions need groups"
    first = np.ones(len(split), bool)
    first[1:] = split.groups[1:] != split.groups[:-1]
    q_idx, g_idx = np.flatnonzero(first), np.flatnonzero(~first)
    query = dataclasses.replace(split.subset(q_idx), split=f"{split.split}_queries")
    gallery = dataclasses.replace(split.subset(g_idx), split=f"{split.split}_gallery")
    return query, gallery


# --------------------------------------------------------------------------------------
# IMDB

IMDB_SUBDIRS = ("aclImdb", "imdb", "imdb/aclImdb")
IMDB_CSV_NAMES = ("IMDB Dataset.csv", "IMDB_Dataset.csv", "imdb.csv", "imdb_dataset.csv")
IMDB_LAYOUT = (
    "<root>/aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt  (the Stanford download), or\n"
    "<root>/imdb/IMDB Dataset.csv  (the 50k CSV: columns review, sentiment)"
)
IMDB_QUERIES = ("a positive review of a movie.", "a negative review of a movie.")
IMDB_CLASSNAMES = ["negative", "positive"]  # label 0 / 1, as tfds imdb_reviews


def locate_imdb(root: str) -> str | None:
    for d in candidate_dirs(root, IMDB_SUBDIRS):
        if os.path.isdir(os.path.join(d, "test", "pos")) or os.path.isdir(
            os.path.join(d, "train", "pos")
        ):
            return d
        for n in IMDB_CSV_NAMES:
            if os.path.isfile(os.path.join(d, n)):
                return os.path.join(d, n)
    return None


def load_imdb(root: str, split: str = "all", queries: Sequence[str] = IMDB_QUERIES) -> TextSplit:
    """IMDB reviews: ``all`` (50,000, the paper's gallery), ``train``, ``test`` or ``queries``.

    Labels: 0 negative, 1 positive. The ``queries`` split holds the two class
    descriptions (positive first, as in the paper). The text is the raw review (HTML
    ``<br />`` tags included).
    """
    if split == "queries":
        return TextSplit(
            name="imdb_text", split="queries", items=["query/positive", "query/negative"],
            texts=list(queries), labels=np.array([1, 0]), classnames=list(IMDB_CLASSNAMES),
        )
    if split not in ("all", "train", "test"):
        raise _bad_split("imdb_text", split, ["all", "train", "test", "queries"])
    src = locate_imdb(root)
    if src is None:
        searched = looked_for(root, IMDB_SUBDIRS, ["train/pos/", "test/pos/", *IMDB_CSV_NAMES])
        raise layout_error("imdb_text", root, searched, IMDB_LAYOUT)
    items: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    if os.path.isfile(src):  # the 50k CSV (no train/test split inside)
        if split != "all":
            raise ValueError(f"imdb_text: the CSV {src} has only the split 'all'")
        with open(src, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for i, row in enumerate(reader):
                items.append(f"row{i:05d}")
                texts.append(row["review"])
                labels.append(1 if row["sentiment"].strip().lower().startswith("pos") else 0)
    else:
        for part in ("train", "test") if split == "all" else (split,):
            for lab, pol in ((0, "neg"), (1, "pos")):
                folder = os.path.join(src, part, pol)
                if not os.path.isdir(folder):
                    raise DatasetLayoutError(f"imdb_text: missing {folder}\n{IMDB_LAYOUT}")
                for fn in sorted(os.listdir(folder), key=_imdb_sort_key):
                    if not fn.endswith(".txt"):
                        continue
                    with open(os.path.join(folder, fn), encoding="utf-8") as f:
                        texts.append(f.read())
                    items.append(f"{part}/{pol}/{fn}")
                    labels.append(lab)
    return TextSplit(name="imdb_text", split=split, items=items, texts=texts,
                     labels=np.array(labels, np.int64), classnames=list(IMDB_CLASSNAMES),
                     root=src)


def _imdb_sort_key(fn: str) -> tuple[int, str]:
    head = fn.split("_", 1)[0]
    return (int(head) if head.isdigit() else -1, fn)


# --------------------------------------------------------------------------------------
# 20 Newsgroups ("bydate" folders), in scikit-learn's order

NEWSGROUP_DESCRIPTIONS: dict[str, str] = {
    "alt.atheism": "a post about atheism.",
    "comp.graphics": "a post about computer graphics.",
    "comp.os.ms-windows.misc": "a post about the Microsoft Windows operating system.",
    "comp.sys.ibm.pc.hardware": "a post about IBM PC hardware.",
    "comp.sys.mac.hardware": "a post about Apple Macintosh hardware.",
    "comp.windows.x": "a post about the X Window System.",
    "misc.forsale": "a post about items for sale.",
    "rec.autos": "a post about cars.",
    "rec.motorcycles": "a post about motorcycles.",
    "rec.sport.baseball": "a post about baseball.",
    "rec.sport.hockey": "a post about hockey.",
    "sci.crypt": "a post about cryptography.",
    "sci.electronics": "a post about electronics.",
    "sci.med": "a post about medicine.",
    "sci.space": "a post about space.",
    "soc.religion.christian": "a post about Christianity.",
    "talk.politics.guns": "a post about guns and gun politics.",
    "talk.politics.mideast": "a post about politics in the Middle East.",
    "talk.politics.misc": "a post about politics.",
    "talk.religion.misc": "a post about religion.",
}
NEWSGROUP_SUBDIRS = ("20newsgroups", "20news-bydate", "20news_home", "20newsgroups/20news-bydate",
                     "20newsgroups/20news_home")
NEWSGROUP_LAYOUT = (
    "<root>/20newsgroups/20news-bydate-{train,test}/<newsgroup>/<message number>\n"
    "  (the '20news-bydate' download, 20 class folders per split)"
)


def locate_newsgroups(root: str, split: str = "test") -> str | None:
    for d in candidate_dirs(root, NEWSGROUP_SUBDIRS):
        p = os.path.join(d, f"20news-bydate-{split}")
        if os.path.isdir(p):
            return p
    return None


def _sklearn_load_files_order(folder: str) -> tuple[list[str], list[int], list[str]]:
    """Files and labels in the order of sklearn's ``load_files(..., random_state=0)``.

    sklearn lists class folders sorted, files sorted within each, then permutes the whole
    list with ``np.random.RandomState(0).shuffle(np.arange(n))``.
    """
    classes = sorted(e for e in os.listdir(folder) if os.path.isdir(os.path.join(folder, e)))
    files: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        names = sorted(os.listdir(os.path.join(folder, c)))
        files += [f"{c}/{n}" for n in names]
        labels += [k] * len(names)
    perm = np.arange(len(files))
    np.random.RandomState(0).shuffle(perm)
    return [files[i] for i in perm], [labels[i] for i in perm], classes


def load_newsgroups(
    root: str,
    split: str = "test",
    descriptions: Mapping[str, str] | None = None,
) -> TextSplit:
    """20 Newsgroups in exactly ``sklearn.datasets.fetch_20newsgroups(subset=split)``'s order.

    sklearn caches ``load_files(<split folder>, encoding="latin1")`` (folders and files
    sorted, shuffled with ``RandomState(0)``) and then, with the default ``shuffle=True,
    random_state=42``, permutes again with ``RandomState(42)``; ``subset="all"``
    concatenates the (already RandomState(0)-shuffled) train and test lists before the
    second shuffle. Texts are decoded as latin-1, nothing is stripped (``remove=()``).

    Args:
        root: data root (or the folder holding ``20news-bydate-<split>``).
        split: ``"test"`` (7,532 posts, the paper's gallery), ``"train"``, ``"all"`` or
            ``"queries"`` (one description per newsgroup, label = its index).
        descriptions: ``{newsgroup: query text}`` replacing :data:`NEWSGROUP_DESCRIPTIONS`.

    Items are ``"<split>/<newsgroup>/<message number>"``.
    """
    if split == "queries":
        desc = dict(NEWSGROUP_DESCRIPTIONS, **(descriptions or {}))
        names = sorted(NEWSGROUP_DESCRIPTIONS)
        return TextSplit(
            name="newsgroup_text", split="queries", items=[f"query/{n}" for n in names],
            texts=[desc[n] for n in names], labels=np.arange(len(names)), classnames=names,
        )
    if split not in ("test", "train", "all"):
        raise _bad_split("newsgroup_text", split, ["test", "train", "all", "queries"])
    parts = ("train", "test") if split == "all" else (split,)
    items: list[str] = []
    paths: list[str] = []
    labels: list[int] = []
    classnames: list[str] | None = None
    folders: list[str] = []
    for part in parts:
        folder = locate_newsgroups(root, part)
        if folder is None:
            searched = looked_for(root, NEWSGROUP_SUBDIRS, [f"20news-bydate-{part}/"])
            raise layout_error("newsgroup_text", root, searched, NEWSGROUP_LAYOUT)
        folders.append(folder)
        files, labs, classes = _sklearn_load_files_order(folder)
        if classnames is not None and classes != classnames:
            raise ValueError("20news-bydate-train and -test have different newsgroups")
        classnames = classes
        items += [f"{part}/{f}" for f in files]
        paths += [os.path.join(folder, f) for f in files]
        labels += labs
    perm = np.arange(len(items))
    np.random.RandomState(42).shuffle(perm)
    texts = []
    for i in perm:
        with open(paths[i], "rb") as f:
            texts.append(f.read().decode("latin-1"))
    return TextSplit(
        name="newsgroup_text", split=split, items=[items[i] for i in perm], texts=texts,
        labels=np.array([labels[i] for i in perm], np.int64), classnames=classnames,
        root=folders[0] if len(folders) == 1 else os.path.dirname(folders[0]),
    )


# --------------------------------------------------------------------------------------
# BEIR (jsonl + qrels tsv) and NanoBEIR (parquet)

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


def read_beir_qrels(path: str) -> tuple[dict[str, dict[str, int]], int]:
    """A BEIR qrels TSV: ``{query id: {corpus id: score}}`` and the number of pairs read.

    The format: an optional header ``query-id<TAB>corpus-id<TAB>score``, then one judged
    pair per line, fields separated by tabs (a space *inside* a field is part of the id,
    never a separator). Trailing whitespace of a line is tolerated, as are blank lines.

    Raises:
        DataFileError: a line without three tab-separated fields, or a score that is not
            an integer; the message names ``path:line`` and shows the line.
    """
    qrels: dict[str, dict[str, int]] = {}
    pairs = 0
    with open(path, encoding="utf-8") as f:
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
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
            pairs += 1
    return qrels, pairs


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
        raise _bad_split(name, split, ["queries", "corpus"])
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
    if fmt == "parquet":
        t = _read_parquet(_parquet(d, "queries"))  # type: ignore[arg-type]
        q_ids, q_texts = [str(x) for x in t["_id"]], [str(x) for x in t["text"]]
        qrels_file = _parquet(d, "qrels")
        if qrels_file is not None:
            r = _read_parquet(qrels_file)
            scores = r.get("score") or [1] * len(r["query-id"])
            for q, doc, s in zip(r["query-id"], r["corpus-id"], scores):
                qrels.setdefault(str(q), {})[str(doc)] = int(s)
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
        qrels, pairs = read_beir_qrels(tsv)
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
               "unjudged_queries_dropped": len(q_ids) - len(keep)},
    )


# --------------------------------------------------------------------------------------
# CISI (Glasgow IR collection): CISI.ALL, CISI.QRY, CISI.REL

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
        raise _bad_split("cisi", split, ["queries", "corpus"])
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


# --------------------------------------------------------------------------------------
# Generic JSONL of texts with labels; replacement texts

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
    with open(path, encoding="utf-8") as f:
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
