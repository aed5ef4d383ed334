"""The offline demo: shipped model, card and embedded data; verdict logic; the quick demo's
outputs checked against the pipeline and sklearn."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from crossgap_jax import demo
from crossgap_jax.retrieval import paired_bootstrap_ci, verdict

HAVE_ASSETS = os.path.isfile(demo.DEMO_CHECKPOINT) and os.path.isfile(demo.DEMO_DATA)
needs_assets = pytest.mark.skipif(not HAVE_ASSETS, reason="shipped demo assets missing "
                                  "(python -m crossgap_jax.train.demo_caltech builds them)")
needs_data = pytest.mark.skipif(not os.path.isfile(demo.DEMO_DATA),
                                reason="embedded demo data missing "
                                "(python -m crossgap_jax.train.demo_caltech builds it)")


# ---------------------------------------------------------------- verdict logic (pure)
@pytest.mark.parametrize("ci, direction, expected", [
    ([0.5, 2.0], 1, "holds"),
    ([-2.0, -0.5], 1, "does not hold"),
    ([-1.0, 1.0], 1, "inconclusive"),
    ([0.0, 1.0], 1, "inconclusive"),     # touching 0 counts as containing it
    ([-1.0, 0.0], 1, "inconclusive"),
    ([-2.0, -0.5], -1, "holds"),          # the paper predicts a decrease (zero-shot)
    ([0.5, 2.0], -1, "does not hold"),
    ([-0.25, 0.25], -1, "inconclusive"),
    ([3.0, 3.0], 1, "holds"),             # a degenerate interval away from 0
])
def test_verdict_on_constructed_intervals(ci, direction, expected):
    assert verdict(ci, direction) == expected


@pytest.mark.parametrize("ci, direction", [([1.0, 0.5], 1), ([float("nan"), 1.0], 1),
                                           ([0.0, 1.0], 0), ([0.0, 1.0], 2)])
def test_verdict_rejects_bad_input(ci, direction):
    with pytest.raises(ValueError):
        verdict(ci, direction)


def test_paired_bootstrap_ci_constant_difference_is_exact():
    base = np.array([0.0, 0.5, 0.25, 0.75])
    assert paired_bootstrap_ci(base, base + 0.25, samples=300) == [25.0, 25.0]


def test_paired_bootstrap_ci_matches_normal_approximation():
    # Differences 0 or 1 (x100 -> 0 or 100 points), half each: the resampled mean is
    # Binomial(n, 1/2) * 100 / n, ~ N(50, 100 * sqrt(0.25 / n)); 95%: 50 -/+ 1.96 sd.
    n = 400
    new = np.tile([0.0, 1.0], n // 2)
    lo, hi = paired_bootstrap_ci(np.zeros(n), new, samples=20000, seed=1)
    sd = 100 * math.sqrt(0.25 / n)
    assert lo == pytest.approx(50 - 1.96 * sd, abs=0.6)
    assert hi == pytest.approx(50 + 1.96 * sd, abs=0.6)


def test_paired_bootstrap_ci_bad_input():
    with pytest.raises(ValueError, match="same items"):
        paired_bootstrap_ci([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="no items"):
        paired_bootstrap_ci([], [])


def test_demo_settings_validation():
    with pytest.raises(ValueError, match="record_steps"):
        demo.DemoSettings(oti_steps=10, record_steps=(1, 20))
    with pytest.raises(ValueError, match="oti_steps"):
        demo.DemoSettings(oti_steps=0)


# ---------------------------------------------------------------- shipped assets
@needs_assets
def test_shipped_checkpoint_and_card():
    from crossgap_jax.fileio import sha256_file
    from crossgap_jax.models.checkpoint.fingerprint import params_fingerprint
    from crossgap_jax.train.demo_caltech import CARD_NAME, COMMAND, caltech_demo_train_config

    size = os.path.getsize(demo.DEMO_CHECKPOINT)
    data_size = os.path.getsize(demo.DEMO_DATA)
    assert size + data_size <= 21 * 1000 * 1000  # the demo's whole asset budget
    with open(demo.DEMO_CARD) as f:
        card = json.load(f)
    assert os.path.basename(demo.DEMO_CARD) == CARD_NAME
    assert card["sha256"] == sha256_file(demo.DEMO_CHECKPOINT)
    assert card["size_bytes"] == size
    assert card["command"].startswith(COMMAND)
    assert card["seed"] == 0
    # Variant (a) of the controlled experiment, its recipe unchanged.
    assert card["train_config"] == json.loads(json.dumps(caltech_demo_train_config().to_dict()))
    assert card["train_config"]["variant"] == "clip" and card["train_config"]["steps"] == 600
    assert card["demo_data"]["sha256"] == sha256_file(demo.DEMO_DATA)
    clip = demo.load_demo_clip()
    assert card["params_sha256"] == params_fingerprint(clip.params)
    assert clip.config.name == card["architecture"]["name"] == "crossgap-caltech"
    assert clip.config.text.vocab_size == 49408  # the real tokenizer's vocabulary
    with open(os.path.join(os.path.dirname(demo.DEMO_DATA), "demo_caltech101_LICENSE.txt")) as f:
        lic = f.read()
    assert "CC BY 4.0" in lic and "Caltech 101" in lic


@needs_data
def test_embedded_datasets_need_no_data_root(monkeypatch):
    import crossgap_jax.data as cgd
    from crossgap_jax.train.data import OBJECT_HELDOUT_TEMPLATES, OBJECT_TRAIN_TEMPLATES

    monkeypatch.delenv("CROSSGAP_SHARED_DATA", raising=False)
    task = cgd.get_task(demo.IMAGE_DATASET)
    assert (len(task.query), len(task.gallery), task.relevance) == (400, 1000, "label")
    assert task.query.split == "test" and task.gallery.split == "train"
    assert np.array_equal(np.bincount(task.query.labels), np.full(100, 4))
    assert np.array_equal(np.bincount(task.gallery.labels), np.full(100, 10))
    img = task.query.open_image(0)
    assert img.size == (64, 64) and img.mode == "RGB"
    ttask = cgd.get_task(demo.TEXT_DATASET)
    assert (len(ttask.query), len(ttask.gallery)) == (100, 700)
    names = task.query.classnames
    assert ttask.query.texts[5] == OBJECT_HELDOUT_TEMPLATES[0].format(names[5])
    assert ttask.gallery.texts[100 + 7] == OBJECT_HELDOUT_TEMPLATES[2].format(names[7])
    assert ttask.gallery.labels[100 + 7] == 7
    train_texts = {t.format(c) for t in OBJECT_TRAIN_TEMPLATES for c in names}
    assert not train_texts & (set(ttask.query.texts) | set(ttask.gallery.texts))
    entry = {e.name: e for e in cgd.list_datasets(None)}[demo.IMAGE_DATASET]
    assert entry.found == demo.DEMO_DATA
    assert demo.IMAGE_DATASET not in cgd.IMAGE_DATASETS  # not one of the paper's datasets
    with pytest.raises(ValueError, match="valid splits: train, test"):
        cgd.get_dataset(demo.IMAGE_DATASET, split="val")


@needs_data
def test_embedded_images_are_the_coop_images(shared_data):
    """Queries come from the CoOp test split only, gallery images from train; the stored
    JPEGs decode to the 64 px resize + centre crop of the originals (within JPEG error)."""
    import crossgap_jax.data as cgd
    from crossgap_jax.data.preprocess import center_crop, resize_shortest_side

    for split in ("test", "train"):
        emb = cgd.get_dataset(demo.IMAGE_DATASET, split=split)
        full = cgd.get_dataset("caltech101", str(shared_data), split)
        pos = {it: i for i, it in enumerate(full.items)}
        assert all(it in pos for it in emb.items)
        assert emb.classnames == full.classnames
        for k in (0, len(emb) // 2, len(emb) - 1):
            i = pos[emb.items[k]]
            assert emb.labels[k] == full.labels[i]
            ref = np.asarray(center_crop(resize_shortest_side(
                full.open_image(i, draft_size=128), 64), 64), np.float64)
            got = np.asarray(emb.open_image(k), np.float64)
            assert np.abs(got - ref).mean() < 4.0  # JPEG q90 at 64 px: ~1-2 grey levels


# ---------------------------------------------------------------- the quick demo
@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    if not HAVE_ASSETS:
        pytest.skip("shipped demo assets missing")
    out = tmp_path_factory.mktemp("demo")
    return demo.run_demo(out_dir=str(out), quick=True, progress=False, verbose=False), out


@needs_assets
@pytest.mark.slow
def test_quick_demo_writes_its_files(quick_demo):
    out, d = quick_demo
    for name in ("demo_figure.png", "demo_results.json", "analysis/analysis.json",
                 "analysis/map_vs_steps.png", "analysis/loss.png", "analysis/similarities.png"):
        assert os.path.getsize(d / name) > 0, name
    with open(out["json"]) as f:
        js = json.load(f)
    assert js["quick"] is True and js["settings"]["oti_steps"] == demo.QUICK.oti_steps
    for needle in ("image->image mAP", "OTI->image mAP", "text->text mAP", "OVI->text mAP",
                   "standard zero-shot top-1", "modality gap", "paper, real CLIP ViT-B/32"):
        assert needle in out["report"]


@needs_assets
@pytest.mark.slow
def test_quick_demo_numbers_are_the_pipelines(quick_demo):
    """The JSON's numbers equal evaluate_task / zero_shot_accuracy on the run's cached
    features, and the baseline mAP equals sklearn's average precision."""
    from sklearn.metrics import average_precision_score

    from crossgap_jax import retrieval
    from crossgap_jax.pipeline.measure import evaluate_task
    from crossgap_jax.pipeline.tasks import classnames_split

    out, d = quick_demo
    with open(out["json"]) as f:
        js = json.load(f)
    run = demo.demo_run(str(d), demo.QUICK, progress=False)  # same run dir: cached features
    text_run = run.with_settings(record_steps=())  # as the demo: OVI records nothing
    for r, key, ds, base_t, inv_t in ((run, "image", demo.IMAGE_DATASET, "image", "oti"),
                                      (text_run, "text", demo.TEXT_DATASET, "text", "ovi")):
        task = r.task(ds)
        g = r.side_features(task.gallery, key)
        q = r.side_features(task.query, base_t)
        qi = r.side_features(task.query, inv_t)
        assert js[key]["baseline"]["mAP"] == pytest.approx(evaluate_task(task, q, g)["mAP"])
        assert js[key]["inverted"]["mAP"] == pytest.approx(evaluate_task(task, qi, g)["mAP"])
        # Independent reference for the baseline: sklearn's AP per query.
        s = (q.features / np.linalg.norm(q.features, axis=1, keepdims=True)) @ (
            g.features / np.linalg.norm(g.features, axis=1, keepdims=True)).T
        rel = task.query.labels[:, None] == task.gallery.labels[None, :]
        ap = [average_precision_score(rel[i], s[i]) for i in range(len(s))]
        assert js[key]["baseline"]["mAP"] == pytest.approx(100 * np.mean(ap), abs=1e-6)
    images = run.task(demo.IMAGE_DATASET).query
    fi = run.features(images)
    prompts = run.features(
        classnames_split(demo.IMAGE_DATASET, images.classnames),
        template=js["zero_shot"]["prompt"])
    w = retrieval.build_classifier(prompts.features)
    acc = retrieval.zero_shot_accuracy(fi.features, w, images.labels)["top1"]
    assert js["zero_shot"]["inter"]["top1"] == pytest.approx(acc)
    claims = {c["key"]: c for c in js["claims"]}
    assert claims["image"]["baseline"] == js["image"]["baseline"]["mAP"]
    assert claims["zero_shot"]["inverted"] == js["zero_shot"]["oti"]["top1"]


@needs_assets
@pytest.mark.slow
def test_quick_demo_verdicts_follow_their_intervals(quick_demo):
    out, _ = quick_demo
    with open(out["json"]) as f:
        js = json.load(f)
    assert [c["key"] for c in js["claims"]] == ["image", "text", "zero_shot"]
    for c in js["claims"]:
        lo, hi = c["ci95"]
        assert lo <= c["difference"] + 1e-9 and c["difference"] <= hi + 1e-9
        expected = ("inconclusive" if lo <= 0 <= hi
                    else "holds" if (lo > 0) == (c["paper_direction"] > 0) else "does not hold")
        assert c["verdict"] == expected
        assert f"verdict on this model: {expected.upper()}" in out["report"]
    assert js["claims"][0]["paper"] == [39.2, 41.2]
    assert js["claims"][2]["paper"] == [61.9, 56.4]


@needs_assets
@pytest.mark.slow
def test_demo_runs_with_runtime_dependencies_only(tmp_path):
    """`make demo` installs `pip install -e .` only: the demo must not import torch,
    tensorflow(-datasets), scikit-learn or the test tools (blocked here)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "# None in sys.modules: 'import x' fails and find_spec('x') says not installed.\n"
        "for name in ('torch', 'tensorflow', 'tensorflow_datasets', 'sklearn', 'pytest',\n"
        "             'torchmetrics', 'nbclient', 'open_clip', 'clip'):\n"
        "    sys.modules[name] = None\n"
        "from crossgap_jax import demo\n"
        "s = demo.DemoSettings(oti_steps=2, ovi_steps=2, record_steps=(1, 2),"
        " bootstrap_samples=50)\n"
        f"r = demo.run_demo({str(tmp_path)!r}, settings=s, progress=False, verbose=False)\n"
        "print('verdicts', [c['verdict'] for c in r['results']['claims']])\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(demo.__file__)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "verdicts" in p.stdout


# ---------------------------------------------------------------- figures (issue: labels)
def _fake_analysis() -> dict:
    edges = np.linspace(-1, 1, 5)
    part = {"histogram": np.array([0, 1, 2, 1]), "mean": 0.5}
    return {"dataset": "toy", "baseline_mAP": 30.0,
            "curves": {"R=1": {"steps": [1, 10], "mAP": [20.0, 25.0]},
                       "R=4": {"steps": [1, 10], "mAP": [21.0, 27.0]}},
            "mean_loss": {"R=1": [0.9, 0.5, 0.4], "R=4": [0.8, 0.3, 0.2]},
            "modality_gap": {"image-text": 0.8, "image-oti": 0.3, "text-oti": 0.6},
            "distributions": {"image-image": {"bin_edges": edges, "unpaired": part,
                                              "paired": None},
                              "text-image": {"bin_edges": edges, "unpaired": part,
                                             "paired": part},
                              "inverted-image": {"bin_edges": edges, "unpaired": part,
                                                 "paired": part}}}


def test_similarity_plot_says_which_curves_are_paired(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from crossgap_jax.pipeline.analyze import analysis_figure, plot_analysis

    fig = analysis_figure(_fake_analysis(), title="t", caption="what to look at")
    ax = fig.axes[2]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["image-image, unpaired (two different query images)",
                      "text-image, unpaired (an image, another image's class prompt)",
                      "text-image, paired (an image and its class prompt)",
                      "OTI-image, paired (an image and its own OTI feature)"]
    assert "paired vs unpaired" in ax.get_title()
    assert [t.get_text() for t in fig.texts] == ["t", "what to look at"]  # title, caption
    curve_labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert curve_labels == ["OTI->image, R=1", "OTI->image, R=4", "image->image (no inversion)"]
    # analyze's own PNGs draw the same panels.
    paths = plot_analysis(_fake_analysis(), str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["map_vs_steps.png", "loss.png",
                                                    "similarities.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)
