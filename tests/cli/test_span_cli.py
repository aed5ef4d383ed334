"""``span`` (Herzog & Wang), ``i0t`` and ``gr-clip`` end to end on the tiny model over a real
Caltech101 subset: each metric recomputed from the model's own ``encode_text`` of the class
names (torch.cov / torch.linalg.eigh) and the run's cached image features."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support.run_oracles import ncm_top1, ref_retrieval, unit


def _cli(ckpt, shared_data, run_dir, *extra):
    return ["--model", "tiny", "--checkpoint", ckpt, "--data-root", str(shared_data),
            "--run-dir", str(run_dir), "--batch-size", "8", *extra]


def _record(run_dir, command, **arguments):
    """The results of the one record of ``command`` whose arguments include ``arguments``."""
    (res,) = [r["results"] for r in (json.loads(p.read_text())
                                     for p in (run_dir / "records").glob(f"{command}-*.json"))
              if all(r["arguments"].get(k) == v for k, v in arguments.items())]
    return res


def _features(run_dir, split):
    """{item: projected image feature} over the cached files of ``split`` (float64)."""
    from crossgap_jax.pipeline.store import load_features

    out = {}
    for p in run_dir.rglob(f"{split}-image-*.npz"):
        fs = load_features(str(p))
        if fs.meta["projected"]:
            out.update(zip(fs.items, np.asarray(fs.features, np.float64), strict=True))
    assert out, f"no cached {split} features"
    return out


def _labels_of(shared_data, split, items):
    from crossgap_jax.data import get_dataset

    ds = get_dataset("caltech101", str(shared_data), split)
    pos = {it: i for i, it in enumerate(ds.items)}
    return np.array([ds.labels[pos[it]] for it in items])


@pytest.fixture(scope="module")
def tiny_model():
    from crossgap_jax.models import create_clip

    return create_clip("tiny", seed=3)  # the model of the tiny_ckpt fixture


def _projector(clip, names, reduce):
    """U^T U from the unnormalised text features of the raw names, in torch."""
    t = torch.tensor(np.asarray(clip.encode_text(clip.tokenize(list(names))), np.float64))
    vals, vecs = torch.linalg.eigh(torch.cov(t.T))
    u = vecs[:, torch.sort(vals, descending=True).indices[: t.shape[1] // reduce]].T
    return (u.T @ u).numpy()


def _qg(run_dir, shared_data):
    qd, gd = _features(run_dir, "test"), _features(run_dir, "train")
    qi, gi = sorted(qd), sorted(gd)
    return (np.stack([qd[i] for i in qi]), np.stack([gd[i] for i in gi]),
            _labels_of(shared_data, "test", qi), _labels_of(shared_data, "train", gi))


def _check(res, want):
    for k, v in want.items():
        assert res[k] == pytest.approx(v, abs=1e-4), k


@pytest.mark.slow
def test_retrieve_span_and_posthoc_recomputed(tiny_ckpt, tiny_model, shared_data, tmp_path):
    from crossgap_jax.baselines import read_span_classes
    from crossgap_jax.cli import main

    run_dir = tmp_path / "run"
    common = _cli(tiny_ckpt, shared_data, run_dir, "--max-queries", "10", "--max-gallery", "40")
    for t in ("span", "i0t", "gr-clip"):
        assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", t,
                     "--gallery-type", t, *common]) == 0, t
    q, g, yq, yg = _qg(run_dir, shared_data)
    assert (len(q), len(g)) == (10, 40)
    classes = read_span_classes()
    p = _projector(tiny_model, classes.names, 2)  # the shipped ImageNet list, d // 2
    res = _record(run_dir, "retrieve", query_type="span")
    _check(res, ref_retrieval(q @ p, g @ p, yq, yg))
    assert res["query_span"] == res["gallery_span"] == {
        "classes": classes.source, "classes_sha256": classes.sha256, "num_classes": 1000,
        "reduce": 2, "dim": 32, "kept": 16, "template": "{}",
        "source": "Herzog & Wang, cvpr26-suppl/span_projection.py"}
    # GR-CLIP: queries and corpus each on their own mean; I0T: the modality's evaluated set
    uq, ug = unit(q), unit(g)
    _check(_record(run_dir, "retrieve", query_type="gr-clip"),
           ref_retrieval(uq - uq.mean(0), ug - ug.mean(0), yq, yg))
    mu = np.concatenate([uq, ug]).mean(0)
    _check(_record(run_dir, "retrieve", query_type="i0t"), ref_retrieval(uq - mu, ug - mu, yq, yg))
    # compare: the same numbers, one row each (few-shot NCM: span has one, the others a
    # stated skip; its values: tests/pipeline/test_compare.py)
    assert main(["--quiet", "compare", "--datasets", "caltech101", "--methods",
                 "span,i0t,gr-clip", "--oti-steps", "2", "--shots", "1", "--fewshot-seeds", "0",
                 *common]) == 0
    out = json.loads((run_dir / "compare" / "metrics.json").read_text())["datasets"]["caltech101"]
    for t in ("span", "i0t", "gr-clip"):
        assert out["cells"][t]["value"] == pytest.approx(
            _record(run_dir, "retrieve", query_type=t)["mAP"], abs=1e-9), t
    fs = out["fewshot"]["cells"]
    assert "shots" in fs["span"]
    for t in ("i0t", "gr-clip"):
        assert "no few-shot NCM form" in fs[t]["skipped"], t


def test_span_classes_reduce_and_ncm_recomputed(tiny_ckpt, tiny_model, shared_data, tmp_path):
    from crossgap_jax.cli import main

    names = [f"a photo of thing number {i}" for i in range(30)] + ["tench", "great white shark"]
    f = tmp_path / "names.txt"
    f.write_text("\n".join(names) + "\n", encoding="utf-8")
    opts = ("--max-queries", "12", "--max-gallery", "200", "--span-classes", str(f),
            "--span-reduce", "4")
    assert main(["--quiet", "retrieve", "--dataset", "caltech101", "--query-type", "span",
                 "--gallery-type", "span", *_cli(tiny_ckpt, shared_data, tmp_path / "r",
                                                 *opts)]) == 0
    run_dir = tmp_path / "run"  # its own folder: its train images differ from the gallery's
    assert main(["--quiet", "classify", "--dataset", "caltech101", "--variants", "span-ncm",
                 *_cli(tiny_ckpt, shared_data, run_dir, *opts)]) == 0
    p = _projector(tiny_model, names, 4)  # 32 names, d // 4 = 8 directions
    res = _record(tmp_path / "r", "retrieve", query_type="span")
    assert res["query_span"]["classes"] == str(f) and res["query_span"]["kept"] == 8
    q, g, yq, yg = _qg(tmp_path / "r", shared_data)
    _check(res, ref_retrieval(q @ p, g @ p, yq, yg))
    trd, ted = _features(run_dir, "train"), _features(run_dir, "test")
    cls = _record(run_dir, "classify")
    ti, qi = sorted(trd), sorted(ted)
    ytr = _labels_of(shared_data, "train", ti)
    yq = _labels_of(shared_data, "test", qi)
    tr, q = np.stack([trd[i] for i in ti]), np.stack([ted[i] for i in qi])
    assert cls["fitted_ncm_train"]["num_images"] == len(tr)
    assert cls["span-ncm"]["top1"] == pytest.approx(ncm_top1(tr @ p, ytr, q @ p, yq, 100),
                                                    abs=1e-6)
    assert cls["span-ncm"]["span"]["reduce"] == 4
    # the span's text features are cached like every text split, keyed by the names
    assert len(list(run_dir.rglob("span-classes/*-text-*.npz"))) == 1


def test_bad_span_classes_fail_before_any_work(tiny_ckpt, tmp_path, capsys):
    from crossgap_jax.cli import main

    common = ["--model", "tiny", "--checkpoint", tiny_ckpt, "--run-dir", str(tmp_path / "r"),
              "--data-root", str(tmp_path)]
    f = tmp_path / "names.txt"
    f.write_text("tench\n\ngoldfish\n")
    assert main(["retrieve", "--dataset", "caltech101", "--query-type", "span",
                 "--gallery-type", "span", "--span-classes", str(f), *common]) == 2
    err = capsys.readouterr().err
    assert "--span-classes: span class list" in err and "line 2 is blank" in err
    assert main(["classify", "--dataset", "caltech101", "--variants", "span-ncm",
                 "--span-classes", str(tmp_path / "nope.txt"), *common]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["retrieve", "--dataset", "caltech101", "--span-reduce", "0", *common])
    assert e.value.code == 2
    assert not (tmp_path / "r").exists()
