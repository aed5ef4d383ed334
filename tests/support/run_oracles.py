"""Independent oracles and helpers shared by the end-to-end baseline tests (IsoCLIP from its
formula by eigendecomposition, brute-force retrieval metrics and NCM, the documented few-shot
sampling, the CLI's records and cached features): written from PAPER.md, importing none of the
package's baseline, metric or sampling code."""

from __future__ import annotations

import json

import numpy as np

from support.fewshot_reference import dassl_indices


def ref_side(p_i, p_t, side, b_i=None, b_t=None):
    """``(E, head, has_bias)``: E = the left (image) or right (text) singular vectors of
    ``M = P_i' P_t'^T`` as the eigenvectors of ``M M^T`` / ``M^T M`` ordered by descending
    eigenvalue s^2, the first r = min(d_i', d_t') of them; head = P' = [P; b] (float64)."""
    p_i, p_t = np.asarray(p_i, np.float64), np.asarray(p_t, np.float64)
    pi = p_i if b_i is None else np.vstack([p_i, b_i])
    pt = p_t if b_t is None else np.vstack([p_t, b_t])
    m = pi @ pt.T if side == "image" else pt @ pi.T
    w, e = np.linalg.eigh(m @ m.T)
    e = e[:, np.argsort(-w)][:, :min(m.shape)]
    return e, (pi if side == "image" else pt), (b_i if side == "image" else b_t) is not None


def ref_apply(x, ref, k_top, k_bottom):
    """normalize(x' E_k E_k^T P'), E_k = columns k_top .. r - k_bottom - 1, x' = [x, 1] when
    the head has a bias."""
    e, head, has_bias = ref
    ek = e[:, k_top:e.shape[1] - k_bottom]
    x = np.asarray(x, np.float64)
    if has_bias:
        x = np.hstack([x, np.ones((len(x), 1))])
    z = x @ ek @ ek.T @ head
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def ref_isoclip(x, p_i, p_t, k_top, k_bottom, side, b_i=None, b_t=None):
    """IsoCLIP features of ``x`` from the formula (float64)."""
    return ref_apply(x, ref_side(p_i, p_t, side, b_i, b_t), k_top, k_bottom)


def unit(z):
    """Rows of ``z`` L2-normalised (float64)."""
    z = np.asarray(z, np.float64)
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def cli_args(tiny_path, shared_data, run_dir, *extra):
    return ["--model", "tiny", "--checkpoint", tiny_path, "--data-root", str(shared_data),
            "--run-dir", str(run_dir), "--batch-size", "8", *extra]


def record_results(run_dir, command, **arguments):
    """The results of the one record of ``command`` whose arguments include ``arguments``."""
    found = []
    for p in (run_dir / "records").glob(f"{command}-*.json"):
        rec = json.loads(p.read_text())
        if all(rec["arguments"].get(k) == v for k, v in arguments.items()):
            found.append(rec["results"])
    (res,) = found
    return res


def ref_retrieval(q, g, yq, yg):
    """mAP, mAP@R, P@R, R@k in percent by brute force over each ranking."""
    sims = unit(q) @ unit(g).T
    out = {"mAP": [], "mAP@R": [], "P@R": [], "R@1": [], "R@5": [], "R@10": []}
    for i in range(len(q)):
        rel = (yg == yq[i])[np.argsort(-sims[i], kind="stable")]
        r = int(rel.sum())
        if r == 0:
            continue
        ranks = np.flatnonzero(rel) + 1
        prec = np.arange(1, r + 1) / ranks
        out["mAP"].append(prec.mean())
        out["mAP@R"].append(prec[ranks <= r].sum() / r)
        out["P@R"].append((ranks <= r).sum() / r)
        for k in (1, 5, 10):
            out[f"R@{k}"].append(float(ranks[0] <= k))
    return {k: 100 * float(np.mean(v)) for k, v in out.items()}


def caltech_split(shared_data, split):
    from crossgap_jax.data import get_dataset

    return get_dataset("caltech101", str(shared_data), split)


def labels_of(ds, items):
    pos = {it: i for i, it in enumerate(ds.items)}
    return np.array([ds.labels[pos[it]] for it in items])


def k_shot(y, num_classes, k, seed, shots=(1, 2)):
    """The documented sampling (Dassl's, as Herzog & Wang run it), reimplemented in
    tests/support: the shots drawn in turn from one seeded generator."""
    return dassl_indices(y, k, seed, shots)


def ncm_top1(sup, ysup, qry, yq, num_classes):
    protos = np.stack([sup[ysup == c].mean(0) for c in range(num_classes)])
    sims = unit(qry) @ unit(protos).T
    return 100 * np.mean([sims[i].argmax() == yq[i] and (sims[i] >= sims[i, yq[i]]).sum() == 1
                          for i in range(len(yq))])


def cached_features(run_dir, ds, split, projected, num=None):
    """{item: feature} of the one cached file of ``split`` (``num`` items when several)."""
    from crossgap_jax.pipeline.store import load_features

    found = []
    for p in (run_dir / "features" / ds).glob(f"{split}-*.npz"):
        fs = load_features(str(p))
        if fs.meta["projected"] is projected and (num is None or len(fs.items) == num):
            found.append(dict(zip(fs.items, np.asarray(fs.features, np.float64), strict=True)))
    assert len(found) == 1, (ds, split, projected, num, len(found))
    return found[0]


def inverted_features(run_dir, method, ds, split):
    """{item: inverted feature} over the inversion folders of ``method`` for ``split``."""
    from crossgap_jax.inversion.resumable import load_inverted

    out = {}
    for d in (run_dir / "inversions" / method / ds).glob(f"{split}-*/"):
        names, arrays = load_inverted(str(d))
        out.update(zip(names, np.asarray(arrays["features"], np.float64), strict=True))
    return out


def stack_rows(d, items):
    """``np.stack`` of ``d[item]`` in the order of ``items``."""
    return np.stack([d[i] for i in items])
