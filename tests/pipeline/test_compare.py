"""``crossgap-jax compare`` end to end on the tiny model over real Caltech101 and COCO caption
subsets with every method (image, oti, isoclip, pca, centered, span, i0t, gr-clip; text, ovi):
every number of the table recomputed here in NumPy / torch from the run's cached features
(brute-force ranking / AP, NumPy PCA / centring / IsoCLIP, the span from torch.cov / eigh of
the model's text features, brute-force NCM, sklearn AUROC); bad input; the NCM metric against
brute force; a pretrained name beside a same-named folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from support.run_oracles import (
    cached_features,
    caltech_split,
    inverted_features,
    k_shot,
    labels_of,
    ncm_top1,
    ref_isoclip,
    ref_retrieval,
    ref_side,
    stack_rows,
    unit,
)
from support.tiny_models import tiny_clip

SHOTS, SEEDS, PCA_K, ISO = (1, 2), (0, 1), 4, (3, 40)
# more names than d = 32: a full-rank covariance, so the kept 16 directions are determined
SPAN_NAMES = [f"a photo of thing number {i}" for i in range(40)]


@pytest.fixture(scope="module")
def heads():

    clip = tiny_clip(3)  # the model of the tiny_ckpt fixture
    return tuple(np.asarray(a, np.float64) for a in clip.projection_matrices())


@pytest.fixture(scope="module")
def span_of():
    """x -> U^T U x, U: the eigenvectors of the d // 2 largest eigenvalues of torch.cov of the
    tiny model's unnormalised encode_text of SPAN_NAMES (Herzog & Wang's span)."""
    import torch

    from crossgap_jax.models import create_clip

    clip = create_clip("tiny", seed=3)
    t = torch.tensor(np.asarray(clip.encode_text(clip.tokenize(SPAN_NAMES)), np.float64))
    vals, vecs = torch.linalg.eigh(torch.cov(t.T))
    u = vecs[:, torch.argsort(vals, descending=True)[: t.shape[1] // 2]].T.numpy()
    return lambda x: x @ u.T @ u


def _posthoc(q, g):
    """I0T (mean of both normalised sets: same modality, distinct items) and GR-CLIP (each
    set's own normalised mean): query and gallery features."""
    uq, ug = unit(q), unit(g)
    mu = np.concatenate([uq, ug]).mean(0)
    return {"i0t": (uq - mu, ug - mu), "gr-clip": (uq - uq.mean(0), ug - ug.mean(0))}


@pytest.fixture(scope="module")
def compared(tiny_ckpt, shared_data, tmp_path_factory):
    from crossgap_jax.cli import main

    if not (shared_data / "coco_karpathy").is_dir():
        pytest.skip("no COCO captions in the shared data")
    tmp = tmp_path_factory.mktemp("compare")
    run_dir, out = tmp / "run", tmp / "out.json"
    (tmp / "span.txt").write_text("\n".join(SPAN_NAMES) + "\n")
    assert main(["--quiet", "compare", "--datasets", "caltech101,coco_text", "--model", "tiny",
                 "--checkpoint", tiny_ckpt, "--data-root", str(shared_data), "--run-dir",
                 str(run_dir), "--batch-size", "8", "--max-queries", "10", "--max-gallery",
                 "40", "--pca-k", str(PCA_K), "--shots", "1,2", "--fewshot-seeds", "0,1",
                 "--oti-steps", "2", "--ovi-steps", "2", "--isoclip-k", "3,40",
                 "--span-classes", str(tmp / "span.txt"), "--output", str(out)]) == 0
    return run_dir, json.loads(out.read_text())


@pytest.mark.slow
def test_compare_retrieval_cells_recomputed(compared, shared_data, heads, span_of):
    run_dir, record = compared
    res = record["results"]
    assert res["rows"] == ["image", "oti", "isoclip", f"pca-{PCA_K}", "centered", "text", "ovi",
                           "span", "i0t", "gr-clip"]  # every method, by default
    assert record["provenance"]["subset"] == {"max_queries": 10, "max_gallery": 40}
    wi, wt = heads
    # caltech101: image -> image over the test queries and a 40-image train gallery
    cal = res["datasets"]["caltech101"]
    q_d, g_d = cached_features(run_dir, "caltech101", "test", True), cached_features(
        run_dir, "caltech101", "train", True, 40)
    qi, gi = sorted(q_d), sorted(g_d)
    yq = labels_of(caltech_split(shared_data, "test"), qi)
    yg = labels_of(caltech_split(shared_data, "train"), gi)
    q, g = stack_rows(q_d, qi), stack_rows(g_d, gi)
    qp = stack_rows(cached_features(run_dir, "caltech101", "test", False), qi)
    gp = stack_rows(cached_features(run_dir, "caltech101", "train", False, 40), gi)
    uq, ug = unit(q), unit(g)
    mu = ug.mean(0)
    vt = np.linalg.svd(ug - mu, full_matrices=False)[2][:PCA_K]
    oti_q = stack_rows(inverted_features(run_dir, "oti", "caltech101", "test"), qi)
    want = {"image": (q, g), "oti": (oti_q, g),
            "isoclip": (ref_isoclip(qp, wi, wt, *ISO, "image"),
                        ref_isoclip(gp, wi, wt, *ISO, "image")),
            f"pca-{PCA_K}": ((uq - mu) @ vt.T, (ug - mu) @ vt.T), "centered": (uq - mu, ug - mu),
            "span": (span_of(q), span_of(g)), **_posthoc(q, g)}
    for row, (a, b) in want.items():
        assert cal["cells"][row]["value"] == pytest.approx(
            ref_retrieval(a, b, yq, yg)["mAP"], abs=1e-4), row
    for row in ("text", "ovi"):
        assert "value" not in cal["cells"][row]
        assert "text-side method" in cal["cells"][row]["skipped"]
    # coco_text: first caption -> the other captions, relevant = same image (item "id#n")
    coco = res["datasets"]["coco_text"]
    q_d = cached_features(run_dir, "coco_text", "test_queries", True)
    g_d = cached_features(run_dir, "coco_text", "test_gallery", True)
    qi, gi = sorted(q_d), sorted(g_d)
    yq = np.array([int(i.split("#")[0]) for i in qi])
    yg = np.array([int(i.split("#")[0]) for i in gi])
    q, g = stack_rows(q_d, qi), stack_rows(g_d, gi)
    qp = stack_rows(cached_features(run_dir, "coco_text", "test_queries", False), qi)
    gp = stack_rows(cached_features(run_dir, "coco_text", "test_gallery", False), gi)
    want = {"text": (q, g), "ovi": (stack_rows(inverted_features(run_dir, "ovi", "coco_text",
                                                    "test_queries"), qi), g),
            "isoclip": (ref_isoclip(qp, wi, wt, *ISO, "text"),
                        ref_isoclip(gp, wi, wt, *ISO, "text")),
            "span": (span_of(q), span_of(g)), **_posthoc(q, g)}
    for row, (a, b) in want.items():
        assert coco["cells"][row]["value"] == pytest.approx(
            ref_retrieval(a, b, yq, yg)["mAP"], abs=1e-4), row
    for row in ("image", "oti", f"pca-{PCA_K}", "centered"):
        assert "image-side method" in coco["cells"][row]["skipped"]
    assert "text dataset" in coco["fewshot"]["skipped"]
    assert "labelled image split" in coco["indicators"]["skipped"]
    table = (run_dir / "compare" / "table.md").read_text()
    assert table == record["table"] and "Caveat: subset run" in table
    for row in ("isoclip", "span", "i0t", "gr-clip"):
        assert f"| {row} | {cal['cells'][row]['value']:.2f} |" in table, row


@pytest.mark.slow
def test_compare_fewshot_and_indicators_recomputed(compared, shared_data, heads, span_of):
    from sklearn.metrics import roc_auc_score

    run_dir, record = compared
    cal = record["results"]["datasets"]["caltech101"]
    wi, wt = heads
    train, test = caltech_split(shared_data, "train"), caltech_split(shared_data, "test")
    ytr, nc = np.asarray(train.labels), len(train.classnames)
    emb_q = cached_features(run_dir, "caltech101", "test", True)
    qi = sorted(emb_q)
    yq = labels_of(test, qi)
    pre_q = cached_features(run_dir, "caltech101", "test", False)
    # the support images: every cached train feature of either kind (gallery and supports)
    from crossgap_jax.pipeline.store import load_features

    tr_emb, tr_pre = {}, {}
    for p in (run_dir / "features" / "caltech101").glob("train-*.npz"):
        fs = load_features(str(p))
        (tr_emb if fs.meta["projected"] else tr_pre).update(
            zip(fs.items, np.asarray(fs.features, np.float64), strict=True))
    oti_tr = inverted_features(run_dir, "oti", "caltech101", "train")
    oti_q = inverted_features(run_dir, "oti", "caltech101", "test")
    e = ref_side(wi, wt, "image")[0]
    ek = e[:, ISO[0]:e.shape[1] - ISO[1]]  # prototypes: means of the unnormalised mapped rows
    maps = {"image": (tr_pre, pre_q, lambda x: x @ wi),
            "isoclip": (tr_pre, pre_q, lambda x: x @ ek @ ek.T @ wi),
            "oti": (oti_tr, oti_q, lambda x: x), "centered": (tr_emb, emb_q, 0),
            "span": (tr_emb, emb_q, span_of),  # U^T U of the unnormalised embeddings
            f"pca-{PCA_K}": (tr_emb, emb_q, PCA_K)}
    cells = cal["fewshot"]["cells"]
    for name, (tr_d, q_d, fn) in maps.items():
        for k in SHOTS:
            accs = []
            for seed in SEEDS:
                idx = k_shot(ytr, nc, k, seed)
                sup, qry = stack_rows(tr_d, [train.items[i] for i in idx]), stack_rows(q_d, qi)
                if callable(fn):
                    sup, qry = fn(sup), fn(qry)
                else:
                    sup, qry = unit(sup), unit(qry)
                    mu = sup.mean(0)
                    sup, qry = sup - mu, qry - mu
                    if fn:
                        vt = np.linalg.svd(sup, full_matrices=False)[2][:fn]
                        sup, qry = sup @ vt.T, qry @ vt.T
                accs.append(ncm_top1(sup, ytr[idx], qry, yq, nc))
            r = cells[name]["shots"][str(k)]
            assert [r["per_seed"][str(s)] for s in SEEDS] == pytest.approx(accs, abs=1e-6), \
                (name, k)
            assert r["mean"] == pytest.approx(np.mean(accs))
    for row in ("text", "ovi"):
        assert "text-side method" in cells[row]["skipped"]
    for row in ("i0t", "gr-clip"):  # their means are fitted on the evaluated sets
        assert "no few-shot NCM form" in cells[row]["skipped"], row
    # indicators: image-image AUROC and the fraction closer to another class
    x = unit(stack_rows(emb_q, qi))
    iu = np.triu_indices(len(x), 1)
    same = (yq[:, None] == yq[None, :])[iu]
    summ = cal["indicators"]["summary"]
    assert summ["image-image"]["auroc"] == pytest.approx(roc_auc_score(same, (x @ x.T)[iu]),
                                                         abs=1e-5)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    frac = [s[i, yq != yq[i]].max() > s[i, (yq == yq[i]) & (np.arange(len(x)) != i)].max()
            for i in range(len(x)) if ((yq == yq[i]).sum() > 1)]
    if frac:
        assert summ["closer_to_other_class"] == pytest.approx(np.mean(frac))
    ox = unit(stack_rows(oti_q, qi))
    assert summ["modality_gap"]["oti-image"] == pytest.approx(
        np.linalg.norm(ox.mean(0) - x.mean(0)), abs=1e-5)


def test_compare_bad_input_one_line(tiny_ckpt, tmp_path, capsys):
    from crossgap_jax.cli import main

    common = ["--model", "tiny", "--checkpoint", tiny_ckpt, "--run-dir", str(tmp_path / "r"),
              "--data-root", str(tmp_path)]
    assert main(["compare", "--datasets", "caltech101", "--methods", "image,imgae",
                 *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown method 'imgae'; did you mean 'image'?" in err and "\n" not in err
    assert main(["compare", "--datasets", "caltech10", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "caltech10" in err and "caltech101" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_compare_skips_pca_without_k():
    from crossgap_jax.pipeline.methods import _rows
    from crossgap_jax.pipeline.settings import BaselineSettings

    assert _rows(["image", "pca"], BaselineSettings()) == [("image", "image", 0),
                                                           ("pca", "pca", 0)]
    assert [r[0] for r in _rows(["pca"], BaselineSettings(pca_k=(2, 8)))] == ["pca-2", "pca-8"]


def test_ncm_accuracy_brute_force_with_ties():
    from crossgap_jax.retrieval.ncm import ncm_accuracy

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((50, 8)), rng.standard_normal((6, 8))
    y = rng.integers(0, 6, 50)
    got = ncm_accuracy(x, y, w, ks=(1, 3))
    for k in (1, 3):  # brute force: cosine of each query to each prototype, one at a time
        hits = 0
        for xi, yi in zip(x, y):
            cos = [float(xi @ wc / np.linalg.norm(xi) / np.linalg.norm(wc)) for wc in w]
            hits += sum(c >= cos[yi] for c in cos) <= k  # the true class counts itself
        assert got[f"top{k}"] == pytest.approx(100.0 * hits / len(y), abs=1e-9)
    # exact ties (dyadic values): a tie with the true class counts as an error
    xt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    wt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = ncm_accuracy(xt, np.array([0, 1, 2]), wt, ks=(1, 2))
    assert got == {"top1": pytest.approx(100 / 3), "top2": 100.0, "num_samples": 3}


def test_pretrained_name_wins_over_same_named_folder(tmp_path, monkeypatch):
    from crossgap_jax.pipeline.presets import DEMO_CHECKPOINT
    from crossgap_jax.pipeline.weights import resolve_source, written_as_path

    if not os.path.isfile(DEMO_CHECKPOINT):
        pytest.skip("the demo checkpoint is not built")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    source, native = resolve_source("demo")
    assert source == DEMO_CHECKPOINT and native is not None
    assert resolve_source(None, "demo")[0] == DEMO_CHECKPOINT
    assert resolve_source("./demo")[0] == "./demo"  # written as a path
    assert [written_as_path(s) for s in ("demo", "./demo", "/x/demo", "demo.npz", "~/d")] == [
        False, True, True, True, True]
