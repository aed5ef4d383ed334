"""The evaluation protocol of the paper, re-derived in plain NumPy from PAPER.md alone.

An independent reference for ``tests/test_reference_protocol.py`` (and the end-to-end tests):
it recomputes every number a ``reproduce`` / ``classify`` run reports from the features that
run cached, with the ground truth read from the dataset files themselves. It deliberately
imports nothing from ``crossgap_jax`` (no metric, task, IsoCLIP or loader code): every
definition below is written out per query, as a loop, from the protocol's text:

- features are L2-normalised, similarity is the dot product;
- AP: mean over the relevant items of the precision at their rank, over the *whole*
  ranking of the gallery; mAP@R: the same truncated at R = number of relevant items, divided
  by R; R-precision: relevant items in the top R over R; Recall@k: a relevant item in the
  top k; means over queries, times 100;
- all-vs-all splits (query split == gallery split): the query is removed from its gallery;
- queries without a relevant item: left out of the means (the definition), or counted as 0
  in every metric with the authors' variant, whose mAP@R on all-vs-all splits counts R
  before the query is removed (it sums the top R + 1 ranks and divides by R);
- revisitop (ROxford5k / RParis6k): per protocol (Easy: positives easy, junk + hard ignored;
  Medium: easy + hard, junk ignored; Hard: hard, junk + easy ignored) the ignored images are
  taken out of the ranking and AP is the revisitop trapezoid area: for the j-th positive
  (0-based) at 0-based position r of the cleaned ranking, ``((j / r if r else 1) +
  (j + 1) / (r + 1)) / 2``, summed and divided by the number of positives; mP@k uses
  ``k' = min(k, 1-based position of the last positive)``; queries without a positive are
  left out;
- zero-shot: the class with the highest cosine similarity (top-1), or among the 5 highest.
- OVI's targets: the authors' OVI replaces ``_`` by a space in every text it inverts (class
  prompts, captions, text-dataset queries); the text->text baseline encodes the raw text
  (:func:`ovi_target_texts`).

Ties between equal scores (not expected with real-valued features): a relevant item is
ranked after the non-relevant items with the same score (the lower bound of the metric).
"""

from __future__ import annotations

import glob
import json
import os
import pickle
from collections.abc import Mapping, Sequence

import numpy as np

RECALL_KS = (1, 5, 10)
REVISITOP_KS = (1, 5, 10)


# ---------------------------------------------------------------------------------------
# The metrics, one query at a time
# ---------------------------------------------------------------------------------------
def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ranked_relevance(scores: Sequence[float], relevant: Sequence[bool]) -> list[bool]:
    """Relevance of the gallery items in ranked order (best first; ties: relevant last)."""
    pairs = sorted(zip(scores, relevant), key=lambda p: (-p[0], bool(p[1])))
    return [bool(r) for _, r in pairs]


def query_metrics(scores: Sequence[float], relevant: Sequence[bool],
                  r_extra: int = 0) -> dict[str, float] | None:
    """AP, AP@R, R-precision and Recall@k of one query (fractions), or None without a
    relevant item. ``r_extra``: ranks added to the AP@R cut-off (1: the authors' variant on
    an all-vs-all split, whose R still counted the query itself)."""
    ranked = ranked_relevance(scores, relevant)
    num_rel = sum(ranked)
    if num_rel == 0:
        return None
    hits, ap, ap_r, p_r = 0, 0.0, 0.0, 0
    first = None
    for pos, rel in enumerate(ranked, start=1):
        if not rel:
            continue
        hits += 1
        first = pos if first is None else first
        ap += hits / pos
        if pos <= num_rel + r_extra:
            ap_r += hits / pos
        if pos <= num_rel:
            p_r += 1
    out = {"AP": ap / num_rel, "AP@R": ap_r / num_rel, "P@R": p_r / num_rel}
    for k in RECALL_KS:
        out[f"R@{k}"] = float(first <= k)
    return out


def retrieval_metrics(query: np.ndarray, gallery: np.ndarray, relevant: np.ndarray,
                      exclude_self: bool = False, variant: str = "standard") -> dict:
    """Means in percent over the queries (see the module docstring), with the counts."""
    q, g = normalize(query), normalize(gallery)
    per_query, empty = [], 0
    for i in range(len(q)):
        cols = [j for j in range(len(g)) if not (exclude_self and j == i)]
        scores = [float(q[i] @ g[j]) for j in cols]
        rel = [bool(relevant[i, j]) for j in cols]
        extra = int(exclude_self and variant == "authors" and bool(relevant[i, i]))
        m = query_metrics(scores, rel, r_extra=extra)
        if m is None:
            empty += 1
            if variant == "authors":
                per_query.append({k: 0.0 for k in ("AP", "AP@R", "P@R",
                                                   *(f"R@{k}" for k in RECALL_KS))})
            continue
        per_query.append(m)
    names = {"AP": "mAP", "AP@R": "mAP@R"}
    out = {names.get(k, k): 100.0 * float(np.mean([m[k] for m in per_query]))
           for k in per_query[0]}
    out["num_queries"] = len(q)
    out["num_evaluated"] = len(per_query)
    return out


def revisitop_ap(ranked_positive: Sequence[bool]) -> float:
    """Trapezoid AP of one junk-free ranking (True = positive)."""
    n = sum(ranked_positive)
    ap, j = 0.0, 0
    for r, pos in enumerate(ranked_positive):
        if not pos:
            continue
        p0 = 1.0 if r == 0 else j / r
        p1 = (j + 1) / (r + 1)
        ap += (p0 + p1) / 2.0
        j += 1
    return ap / n


def revisitop_metrics(query: np.ndarray, gallery: np.ndarray, gnd: Sequence[Mapping]) -> dict:
    """``mAP_{easy,medium,hard}`` and ``mP@k_{protocol}`` in percent."""
    protocols = {"easy": (("easy",), ("junk", "hard")),
                 "medium": (("easy", "hard"), ("junk",)),
                 "hard": (("hard",), ("junk", "easy"))}
    q, g = normalize(query), normalize(gallery)
    out = {}
    for name, (pos_keys, junk_keys) in protocols.items():
        aps, precs = [], {k: [] for k in REVISITOP_KS}
        for i in range(len(q)):
            pos = {int(x) for k in pos_keys for x in gnd[i][k]}
            junk = {int(x) for k in junk_keys for x in gnd[i][k]} - pos
            if not pos:
                continue
            cols = [j for j in range(len(g)) if j not in junk]
            ranked = ranked_relevance([float(q[i] @ g[j]) for j in cols], [j in pos for j in cols])
            aps.append(revisitop_ap(ranked))
            last = max(p for p, r in enumerate(ranked, start=1) if r)
            for k in REVISITOP_KS:
                kq = min(k, last)
                precs[k].append(sum(ranked[:kq]) / kq)
        out[f"mAP_{name}"] = 100.0 * float(np.mean(aps))
        for k in REVISITOP_KS:
            out[f"mP@{k}_{name}"] = 100.0 * float(np.mean(precs[k]))
    return out


def zero_shot(images: np.ndarray, class_features: np.ndarray, labels: Sequence[int]) -> dict:
    """Top-1 / top-5 accuracy in percent: cosine similarity to one feature per class."""
    x, c = normalize(images), normalize(class_features)
    top1 = top5 = 0
    for i in range(len(x)):
        s = [float(x[i] @ c[k]) for k in range(len(c))]
        order = sorted(range(len(c)), key=lambda k: -s[k])
        top1 += order[0] == labels[i]
        top5 += labels[i] in order[:5]
    return {"top1": 100.0 * top1 / len(x), "top5": 100.0 * top5 / len(x)}


def ovi_target_texts(texts: Sequence[str]) -> list[str]:
    """The texts the authors' OVI inverts: every ``_`` replaced by a space."""
    return [t.replace("_", " ") for t in texts]


def relevance_from_keys(query_keys: Sequence, gallery_keys: Sequence) -> np.ndarray:
    """``(Q, G)`` bool: same key (class label, image id) = relevant."""
    return np.array([[a == b for b in gallery_keys] for a in query_keys], bool)


def relevance_from_qrels(qrels: Mapping[str, set], query_ids: Sequence[str],
                         gallery_ids: Sequence[str]) -> np.ndarray:
    return np.array([[d in qrels.get(q, set()) for d in gallery_ids] for q in query_ids], bool)


# ---------------------------------------------------------------------------------------
# What a run cached (file formats: docs/pipeline.md), read with NumPy
# ---------------------------------------------------------------------------------------
def feature_files(run_dir: str, dataset: str) -> list[dict]:
    """Every cached feature file of ``dataset``: ``{"items", "features", "meta", "path"}``."""
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "features", dataset, "*.npz"))):
        with np.load(path, allow_pickle=False) as z:
            out.append({"items": [str(x) for x in z["items"]],
                        "features": np.asarray(z["features"]),
                        "meta": json.loads(str(z["meta"])), "path": path})
    return out


def feature_file(run_dir: str, dataset: str, **meta) -> dict:
    """The one cached feature file of ``dataset`` whose metadata has ``meta``'s values."""
    found = [f for f in feature_files(run_dir, dataset)
             if all(f["meta"].get(k) == v for k, v in meta.items())]
    if len(found) != 1:
        raise AssertionError(f"{len(found)} feature files of {dataset} match {meta}")
    return found[0]


def inverted(run_dir: str, method: str, dataset: str, split: str) -> dict[str, np.ndarray]:
    """Item name -> OTI/OVI feature, from the shards of the run's one inversion folder."""
    dirs = glob.glob(os.path.join(run_dir, "inversions", method, dataset, f"{split}-*"))
    if len(dirs) != 1:
        raise AssertionError(f"{len(dirs)} {method} folders for {dataset}/{split}: {dirs}")
    out = {}
    for shard in glob.glob(os.path.join(dirs[0], "shard-*.npz")):
        with np.load(shard, allow_pickle=False) as z:
            out.update(zip((str(n) for n in z["names"]), np.asarray(z["features"])))
    return out


def rows(table: Mapping[str, np.ndarray], items: Sequence[str]) -> np.ndarray:
    return np.stack([table[i] for i in items])


# ---------------------------------------------------------------------------------------
# Ground truth, from the dataset files
# ---------------------------------------------------------------------------------------
def coop_split(path: str) -> tuple[dict[str, int], list[str]]:
    """CoOp ``split_zhou_*.json``: relative path -> label (all splits), class names by label."""
    with open(path) as f:
        d = json.load(f)
    labels, names = {}, {}
    for part in d.values():
        for rel, lab, cname in part:
            labels[rel] = int(lab)
            names[int(lab)] = cname
    return labels, [names[k] for k in sorted(names)]


def caption_image(item: str) -> str:
    """Caption item ``"<image>#<caption index>"`` -> its image."""
    return item.rsplit("#", 1)[0]


def cisi_qrels(path: str) -> dict[str, set]:
    """``CISI.REL``: lines ``query doc 0 0.0`` -> query id -> relevant doc ids (strings)."""
    out: dict[str, set] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.setdefault(str(int(parts[0])), set()).add(str(int(parts[1])))
    return out


def cub_labels(folder: str) -> dict[str, int]:
    """CUB-200-2011 ``images.txt`` + ``image_class_labels.txt``: relative path -> class id."""
    with open(os.path.join(folder, "images.txt")) as f:
        paths = dict(line.split() for line in f if line.strip())
    with open(os.path.join(folder, "image_class_labels.txt")) as f:
        labels = {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    return {paths[k]: labels[k] for k in paths}


def revisitop_gnd(path: str) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - a file the test wrote itself


# ---------------------------------------------------------------------------------------
# A reproduce run's label / caption / qrels datasets, recomputed
# ---------------------------------------------------------------------------------------
def expected_caltech101(run_dir, data_root, variant="standard") -> dict:
    labels, _ = coop_split(os.path.join(data_root, "caltech101", "split_zhou_Caltech101.json"))
    q = feature_file(str(run_dir), "caltech101", split="test")
    g = feature_file(str(run_dir), "caltech101", split="train")
    rel = relevance_from_keys([labels[i] for i in q["items"]], [labels[i] for i in g["items"]])
    oti = rows(inverted(str(run_dir), "oti", "caltech101", "test"), q["items"])
    return {"baseline": retrieval_metrics(q["features"], g["features"], rel, variant=variant),
            "inverted": retrieval_metrics(oti, g["features"], rel, variant=variant)}


def expected_coco(run_dir, data_root, variant="standard") -> dict:
    q = feature_file(str(run_dir), "coco_text", split="test_queries")
    g = feature_file(str(run_dir), "coco_text", split="test_gallery")
    # The protocol: query = the first caption of an image, gallery = its other captions.
    assert all(i.endswith("#0") for i in q["items"])
    assert not any(i.endswith("#0") for i in g["items"])
    n_images = sum(1 for _ in open(os.path.join(data_root, "coco_karpathy",
                                                "test5k_captions.txt"))) // 5
    assert all(int(caption_image(i)) < n_images for i in q["items"] + g["items"])
    rel = relevance_from_keys([caption_image(i) for i in q["items"]],
                                  [caption_image(i) for i in g["items"]])
    ovi = rows(inverted(str(run_dir), "ovi", "coco_text", "test_queries"), q["items"])
    return {"baseline": retrieval_metrics(q["features"], g["features"], rel, variant=variant),
            "inverted": retrieval_metrics(ovi, g["features"], rel, variant=variant)}


def expected_cisi(run_dir, data_root, variant="standard") -> dict:
    qrels = cisi_qrels(os.path.join(data_root, "cisi", "CISI.REL"))
    q = feature_file(str(run_dir), "cisi", split="queries")
    g = feature_file(str(run_dir), "cisi", split="corpus")
    rel = relevance_from_qrels(qrels, q["items"], g["items"])
    ovi = rows(inverted(str(run_dir), "ovi", "cisi", "queries"), q["items"])
    return {"baseline": retrieval_metrics(q["features"], g["features"], rel, variant=variant),
            "inverted": retrieval_metrics(ovi, g["features"], rel, variant=variant)}


EXPECTED = {"caltech101": expected_caltech101, "coco_text": expected_coco, "cisi": expected_cisi}


def assert_reproduce_matches_reference(run_dir, data_root, variant: str = "standard") -> None:
    """Every retrieval number of ``<run_dir>/metrics.json`` equals the reference's."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for ds, entry in metrics["datasets"].items():
        want = EXPECTED[ds](run_dir, str(data_root), variant)
        for side in ("baseline", "inverted"):
            assert_close(entry[side], want[side], where=f"{ds}/{side}/{variant}")
    for modality, avg in metrics["average"].items():
        rows = [e for e in metrics["datasets"].values() if e["modality"] == modality]
        for side in ("baseline", "inverted"):
            assert abs(avg[side] - np.mean([r[side]["mAP"] for r in rows])) <= 1e-9


def expected_zero_shot(run_dir, data_root, dataset: str = "caltech101") -> dict:
    """inter / OTI / OVI top-1 and top-5 of a ``classify`` run on a CoOp dataset."""
    names = {"caltech101": "split_zhou_Caltech101.json"}
    labels, _ = coop_split(os.path.join(data_root, dataset, names[dataset]))
    images = feature_file(str(run_dir), dataset, split="test")
    y = [labels[i] for i in images["items"]]
    classes = f"{dataset}-classnames"
    coop = feature_file(str(run_dir), classes, template="a photo of a {}.")
    ovi_in = feature_file(str(run_dir), classes, template="a photo of {}")
    oti = rows(inverted(str(run_dir), "oti", dataset, "test"), images["items"])
    ovi = rows(inverted(str(run_dir), "ovi", classes, "classes"), ovi_in["items"])
    return {"inter": zero_shot(images["features"], coop["features"], y),
            "oti": zero_shot(oti, coop["features"], y),
            "ovi": zero_shot(images["features"], ovi, y)}


def assert_close(reported: Mapping, expected: Mapping, atol: float = 1e-6,
                 where: str = "") -> None:
    """Every key of ``expected`` equals the reported value to ``atol``."""
    for k, v in expected.items():
        assert k in reported, f"{where}: {k} not reported"
        assert abs(float(reported[k]) - float(v)) <= atol, (
            f"{where}: {k} reported {reported[k]!r}, reference {v!r}")
