"""End to end on the tiny model over a real Caltech101 subset: retrieve with pca / centered,
classify --variants fewshot and the indicators command, each value recomputed in NumPy from
the run's cached features (independent of crossgap_jax.baselines)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support.run_oracles import (
    caltech_split,
    cli_args,
    k_shot,
    labels_of,
    ncm_top1,
    record_results,
    ref_retrieval,
    ref_side,
    unit,
)
from support.tiny_models import tiny_clip


@pytest.fixture(scope="module")
def heads():

    clip = tiny_clip(3)  # the model of the tiny_ckpt fixture
    return tuple(np.asarray(a, np.float64) for a in clip.projection_matrices())


def _features(run_dir, split, projected):
    """{item: feature} over every cached file of ``split`` (float64)."""
    from crossgap_jax.pipeline.store import load_features

    out = {}
    for p in run_dir.rglob(f"{split}-image-*.npz"):
        fs = load_features(str(p))
        if fs.meta["projected"] is projected:
            out.update(zip(fs.items, np.asarray(fs.features, np.float64), strict=True))
    assert out, f"no cached {split} features"
    return out


def test_retrieve_pca_and_centered_recomputed(tiny_ckpt, shared_data, tmp_path, capsys):
    from crossgap_jax.cli import main

    run_dir = tmp_path / "run"
    common = cli_args(tiny_ckpt, shared_data, run_dir, "--max-queries", "10", "--max-gallery", "40")
    # PCA on one side only, and PCA without k: clear errors before any work
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "pca",
                 "--pca-k", "4", *common]) == 2
    assert "--query-type pca --gallery-type pca" in capsys.readouterr().err
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "pca",
                 "--gallery-type", "pca", *common]) == 2
    assert "exactly one --pca-k" in capsys.readouterr().err
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "pca",
                 "--gallery-type", "pca", "--pca-k", "4", *common]) == 0
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "centered",
                 "--gallery-type", "centered", *common]) == 0
    pca_res = record_results(run_dir, "retrieve", query_type="pca")
    cen_res = record_results(run_dir, "retrieve", query_type="centered")
    qd, gd = _features(run_dir, "test", True), _features(run_dir, "train", True)
    assert (len(qd), len(gd)) == (10, 40)
    qi, gi = sorted(qd), sorted(gd)
    q, g = unit(np.stack([qd[i] for i in qi])), unit(np.stack([gd[i] for i in gi]))
    yq = labels_of(caltech_split(shared_data, "test"), qi)
    yg = labels_of(caltech_split(shared_data, "train"), gi)
    mu = g.mean(0)
    vt = np.linalg.svd(g - mu, full_matrices=False)[2][:4]  # fitted on the gallery
    want = ref_retrieval((q - mu) @ vt.T, (g - mu) @ vt.T, yq, yg)
    for k, v in want.items():
        assert pca_res[k] == pytest.approx(v, abs=1e-4), k
    assert pca_res["query_pca"] == {"k": 4, "whiten": False, "normalize_input": True,
                                    "num_fit": 40, "fit": "gallery"}
    # same modality on both sides: both centred on the gallery mean
    want = ref_retrieval(q - mu, g - mu, yq, yg)
    for k, v in want.items():
        assert cen_res[k] == pytest.approx(v, abs=1e-4), k


@pytest.mark.slow
def test_classify_fewshot_recomputed(tiny_ckpt, shared_data, tmp_path, heads):
    from crossgap_jax.cli import main
    from crossgap_jax.inversion.resumable import load_inverted

    run_dir = tmp_path / "run"
    assert main(["--quiet", "classify", "--dataset", "caltech101", "--variants", "fewshot",
                 "--shots", "1,2", "--pca-k", "4,50", "--isoclip-k", "3,40", "--oti-steps", "2",
                 *cli_args(tiny_ckpt, shared_data, run_dir, "--max-queries", "12")]) == 0
    res = record_results(run_dir, "classify")["fewshot"]
    assert res["seeds"] == [1, 2, 3] and res["shots"] == [1, 2]
    train, test = caltech_split(shared_data, "train"), caltech_split(shared_data, "test")
    ytr, nc = np.asarray(train.labels), len(train.classnames)
    pre_q, emb_q = _features(run_dir, "test", False), _features(run_dir, "test", True)
    qi = sorted(emb_q)
    assert len(qi) == res["num_queries"] == 12
    yq = labels_of(test, qi)
    pre_tr, emb_tr = _features(run_dir, "train", False), _features(run_dir, "train", True)
    oti = {}
    for d in (run_dir / "inversions" / "oti").glob("*/*"):
        names, arrays = load_inverted(str(d))
        oti.update(zip(names, np.asarray(arrays["features"], np.float64), strict=True))
    wi, wt = heads
    e = ref_side(wi, wt, "image")[0]
    ek = e[:, 3:e.shape[1] - 40]
    maps = {"image": (pre_tr, pre_q, lambda x: x @ wi),
            "isoclip": (pre_tr, pre_q, lambda x: x @ ek @ ek.T @ wi),
            "oti": (oti, oti, lambda x: x), "centered": (emb_tr, emb_q, None),
            "pca-4": (emb_tr, emb_q, 4), "pca-50": (emb_tr, emb_q, 50)}
    assert sorted(res["types"]) == sorted(maps)
    for name, (tr_d, q_d, fn) in maps.items():
        got = res["types"][name]
        for k in (1, 2):
            if name == "pca-50":  # D = 32 < 50: skipped with the reason, never a number
                assert "exceeds min(N - 1, D) = 32" in got["skipped"][str(k)]
                continue
            accs = []
            for seed in (1, 2, 3):
                idx = k_shot(ytr, nc, k, seed)
                sup = np.stack([tr_d[train.items[i]] for i in idx])
                qry = np.stack([q_d[i] for i in qi])
                if name in ("centered",) or name.startswith("pca"):
                    sup, qry = unit(sup), unit(qry)
                    mu = sup.mean(0)
                    sup, qry = sup - mu, qry - mu
                    if name.startswith("pca"):
                        vt = np.linalg.svd(sup, full_matrices=False)[2][:fn]
                        sup, qry = sup @ vt.T, qry @ vt.T
                else:
                    sup, qry = fn(sup), fn(qry)
                accs.append(ncm_top1(sup, ytr[idx], qry, yq, nc))
            r = got["shots"][str(k)]
            assert [r["per_seed"][str(s)] for s in (1, 2, 3)] == pytest.approx(accs,
                                                                             abs=1e-6), name
            assert r["mean"] == pytest.approx(np.mean(accs)) and r["std"] == pytest.approx(
                np.std(accs))
    assert res["types"]["pca-50"]["shots"] == {}


@pytest.mark.slow
def test_indicators_command_recomputed(tiny_ckpt, shared_data, tmp_path):
    from sklearn.metrics import roc_auc_score

    from crossgap_jax.cli import main
    from crossgap_jax.inversion.resumable import load_inverted

    run_dir = tmp_path / "run"
    out = tmp_path / "ind.json"
    assert main(["--quiet", "indicators", "--dataset", "caltech101", "--oti-steps", "2",
                 "--output", str(out),
                 *cli_args(tiny_ckpt, shared_data, run_dir, "--max-queries", "40")]) == 0
    res = json.loads(out.read_text())["results"]
    emb = _features(run_dir, "test", True)
    items = sorted(emb)
    x = unit(np.stack([emb[i] for i in items]))
    y = labels_of(caltech_split(shared_data, "test"), items)
    iu = np.triu_indices(len(x), 1)
    sims, same = (x @ x.T)[iu], (y[:, None] == y[None, :])[iu]
    ind = res["indicators"]
    assert ind["image-image"]["auroc"] == pytest.approx(roc_auc_score(same, sims), abs=1e-5)
    assert ind["image-image"]["same"]["count"] == same.sum()
    names, arrays = load_inverted(str(next((run_dir / "inversions" / "oti").glob("*/*"))))
    o = dict(zip(names, np.asarray(arrays["features"], np.float64), strict=True))
    ox = unit(np.stack([o[i] for i in items]))
    assert res["summary"]["modality_gap"]["oti-image"] == pytest.approx(
        np.linalg.norm(ox.mean(0) - x.mean(0)), abs=1e-5)
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    frac = []
    for i in range(len(x)):
        own = [s[i, j] for j in range(len(x)) if j != i and y[j] == y[i]]
        if own:
            frac.append(max(s[i, j] for j in range(len(x)) if y[j] != y[i]) > max(own))
    assert ind["closer_to_other_class"]["num_counted"] == len(frac)
    assert res["summary"]["closer_to_other_class"] == pytest.approx(np.mean(frac))
    assert {"text-image", "oti-image"} <= set(ind)
    assert (run_dir / "indicators" / "caltech101-test.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_baseline_options_fail_before_any_work(tiny_ckpt, tmp_path, capsys):
    from crossgap_jax.cli import main

    common = ["--model", "tiny", "--checkpoint", tiny_ckpt, "--run-dir", str(tmp_path / "r"),
              "--data-root", str(tmp_path)]
    assert main(["classify", "--dataset", "caltech101", "--variants", "fewshot",
                 "--fewshot-types", "image,foo", *common]) == 2
    assert "unknown few-shot feature type(s) ['foo']" in capsys.readouterr().err
    assert main(["classify", "--dataset", "caltech101", "--variants", "fewshot", *common]) == 2
    assert "few-shot feature type pca needs --pca-k" in capsys.readouterr().err
    assert main(["classify", "--dataset", "caltech101", "--variants", "pca-ncm", "--pca-k",
                 "2,3", *common]) == 2
    assert "exactly one --pca-k" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the parser
        main(["classify", "--dataset", "caltech101", "--variants", "fewshot",
              "--fewshot-seeds", "0,-1", *common])
    assert e.value.code == 2
    assert "non-negative integers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["indicators", "--dataset", "caltech101", "--pca-k", "3", *common])
    assert e.value.code == 2
    assert "does not take --pca-k" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_classify_fitted_ncm_recomputed(tiny_ckpt, shared_data, tmp_path):
    from crossgap_jax.cli import main

    run_dir = tmp_path / "run"
    assert main(["--quiet", "classify", "--dataset", "caltech101", "--variants",
                 "pca-ncm,centered-ncm", "--pca-k", "8",
                 *cli_args(tiny_ckpt, shared_data, run_dir, "--max-queries", "12",
                       "--max-gallery", "200")]) == 0
    res = record_results(run_dir, "classify")
    trd, ted = _features(run_dir, "train", True), _features(run_dir, "test", True)
    assert (len(trd), len(ted)) == (200, 12) == (res["fitted_ncm_train"]["num_images"], 12)
    ti, qi = sorted(trd), sorted(ted)
    ytr = labels_of(caltech_split(shared_data, "train"), ti)
    yq = labels_of(caltech_split(shared_data, "test"), qi)
    tr, q = unit(np.stack([trd[i] for i in ti])), unit(np.stack([ted[i] for i in qi]))
    mu = tr.mean(0)
    vt = np.linalg.svd(tr - mu, full_matrices=False)[2][:8]  # fitted on the train split
    for name, fn in (("pca-ncm", lambda z: (z - mu) @ vt.T), ("centered-ncm", lambda z: z - mu)):
        assert res[name]["top1"] == pytest.approx(ncm_top1(fn(tr), ytr, fn(q), yq, 100),
                                                  abs=1e-6), name
    assert res["pca-ncm"]["pca"]["k"] == 8 and res["pca-ncm"]["pca"]["num_fit"] == 200
