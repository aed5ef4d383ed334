"""``compare --layout hw-fewshot`` end to end on the tiny model over two tiny CoOp-format
datasets (Caltech101 and DTD layouts, written here): every cell of Herzog & Wang's table (each
setting x shot x seed, each dataset's mean over seeds and the average over datasets) recomputed
from independently encoded features with the Dassl sampler reimplementation and the torch
classifiers and span of tests/support/fewshot_reference.py; and the default layout's few-shot
NCM cell of ``span`` on the same data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.fewshot_reference import dassl_indices, torch_gda, torch_prototype, torch_span

SHOTS, SEEDS = (1, 2, 4), (1, 2)
SPAN_NAMES = [f"thing number {i}" for i in range(40)]
# (dataset, folder, image folder, split file, class names, CoOp prompt)
DATASETS = (
    ("caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
     ["accordion", "air_plane", "yin_yang"], "a photo of a {}."),
    ("dtd", "dtd", "images", "split_zhou_DescribableTextures.json",
     ["banded", "blotchy_dots", "cracked"], "{} texture."),
)
ROWS = ["prototype", "prototype+span", "prototype+text", "prototype+text+span", "gda",
        "gda+span", "gda+text", "gda+text+span", "gda+text+span(names)"]


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    """Two CoOp datasets; train labels first appear as 1, 0, 2 and class 2 has 3 training
    images (4-shot draws repeat)."""
    root = tmp_path_factory.mktemp("coop")
    rng = np.random.default_rng(0)
    base = 110 + 30 * np.eye(3)  # close colours under heavy noise: accuracies far from 100
    labels = {"train": [1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 2, 1, 0], "val": [0, 1, 2],
              "test": [0, 1, 2, 2, 1, 0, 0, 2, 1, 1] * 3}
    for ds, folder, images, split_file, classes, _ in DATASETS:
        split = {}
        for part, ys in labels.items():
            split[part] = []
            for i, y in enumerate(ys):
                rel = f"{classes[y]}/{part}_{i:02d}.png"
                path = root / folder / images / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                shade = base[y] if ds == "dtd" else base[(y + 1) % 3]
                px = np.clip(shade + rng.normal(0, 90, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(path)
                split[part].append([rel, y, classes[y]])
        (root / folder / split_file).write_text(json.dumps(split))
    (root / "span.txt").write_text("\n".join(SPAN_NAMES) + "\n")
    return root


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.slow
def test_compare_hw_fewshot_layout_recomputed(tiny_ckpt, coop_root, tmp_path):
    from crossgap_jax.cli import main
    from crossgap_jax.data.decoding import load_image
    from crossgap_jax.models import create_clip
    from crossgap_jax.pipeline.prompts import IMAGENET_TEMPLATES

    run_dir, out = tmp_path / "run", tmp_path / "out.json"
    assert main(["--quiet", "compare", "--layout", "hw-fewshot", "--datasets", "caltech101,dtd",
                 "--methods", ",".join(ROWS), "--model", "tiny", "--checkpoint", tiny_ckpt,
                 "--data-root", str(coop_root), "--run-dir", str(run_dir), "--batch-size", "8",
                 "--shots", ",".join(map(str, SHOTS)), "--fewshot-seeds",
                 ",".join(map(str, SEEDS)), "--span-classes", str(coop_root / "span.txt"),
                 "--output", str(out)]) == 0
    record = json.loads(out.read_text())
    res = record["results"]
    assert res["rows"] == ROWS and res["shots"] == list(SHOTS) and res["seeds"] == list(SEEDS)
    clip = create_clip("tiny", seed=3)  # the model of the tiny_ckpt fixture

    def text(texts):
        return np.asarray(clip.encode_text(clip.tokenize(texts)), np.float64)

    # the spans: the zero-shot classifier of the names (their few-shot script), raw names
    per_t = np.stack([_unit(text([t.format(n) for n in SPAN_NAMES]))
                      for t in IMAGENET_TEMPLATES], axis=1)
    spans = {"span": _unit(per_t.mean(1)), "span(names)": text(SPAN_NAMES)}
    oracle = {"prototype": torch_prototype, "gda": torch_gda}
    want_mean: dict[str, dict[str, np.ndarray]] = {}
    for ds, folder, images, split_file, classes, prompt in DATASETS:
        split = json.loads((coop_root / folder / split_file).read_text())

        def encode(rows, _f=folder, _i=images):
            ims = [load_image(coop_root / _f / _i / r[0]) for r in rows]
            return _unit(np.asarray(clip.encode_image(clip.preprocess(ims)), np.float64))

        ytr = np.array([r[1] for r in split["train"]])
        yte = np.array([r[1] for r in split["test"]])
        xtr, xte = encode(split["train"]), encode(split["test"])
        zs = _unit(text([prompt.format(c.replace("_", " ")) for c in classes]))
        entry = res["datasets"][ds]
        want_mean[ds] = {}
        for seed in SEEDS:  # one draw per seed, shared by every row
            for k in SHOTS:
                idx = dassl_indices(ytr, k, seed, SHOTS)
                assert entry["support"][str(seed)][str(k)] == [split["train"][i][0]
                                                               for i in idx]
        for row in ROWS:
            clf, *parts = row.split("+")
            span = next((spans[p] for p in parts if p.startswith("span")), None)
            sup, te = (xtr, xte) if span is None else (torch_span(span, xtr),
                                                      torch_span(span, xte))
            cell = entry["cells"][row]
            accs = []
            for seed in SEEDS:
                accs.append([100.0 * np.mean(oracle[clf](
                    sup[idx], ytr[idx], te, zs if "text" in parts else None).argmax(1) == yte)
                    for idx in (dassl_indices(ytr, k, seed, SHOTS) for k in SHOTS)])
                assert cell["per_seed"][str(seed)] == pytest.approx(accs[-1], abs=1e-4), (
                    ds, row, seed)
            want_mean[ds][row] = np.mean(accs, axis=0)
            assert cell["mean"] == pytest.approx(want_mean[ds][row], abs=1e-4), (ds, row)
            # 1-shot gda without text: no within-class spread, flagged (every seed)
            degenerate = clf == "gda" and "text" not in parts
            assert {s: sorted(d) for s, d in cell["degenerate"].items()} == (
                {str(s): ["1"] for s in SEEDS} if degenerate else {}), (ds, row)
            if span is not None:
                assert cell["span"]["source"] == ("names" if "span(names)" in parts
                                                  else "zeroshot")
    # the average over the datasets, and the table's lines
    table = (run_dir / "compare" / "table.md").read_text()
    assert table == record["table"]
    for row in ROWS:
        avg = np.mean([want_mean[ds][row] for ds, *_ in DATASETS], axis=0)
        assert res["average"][row]["mean"] == pytest.approx(avg, abs=1e-4), row
        flag = row in ("gda", "gda+span")
        for block in [want_mean[ds][row] for ds, *_ in DATASETS] + [avg]:
            cells = [f"{v:.2f}" + (" (degenerate)" if flag and k == 1 else "")
                     for k, v in zip(SHOTS, block, strict=True)]
            assert f"| {row} | " + " | ".join(cells) + " |" in table, row
    assert table.count("| method | 1-shot | 2-shot | 4-shot |") == 3
    assert "### average over 2 dataset(s)" in table
    assert "Degenerate (1-shot): gda: no within-class spread" in table


def test_hw_fewshot_rows_and_bad_input(tiny_ckpt, coop_root, tmp_path, capsys):
    from crossgap_jax.cli import main
    from crossgap_jax.pipeline.fewshot_hw import HW_ROWS, hw_row_settings
    from crossgap_jax.pipeline.methods import check_methods, default_methods

    assert default_methods("hw-fewshot") == list(HW_ROWS) and len(HW_ROWS) == 8
    s = hw_row_settings("prototype+text+span(names)")
    assert (s.classifier, s.use_text, s.project, s.span_source) == (
        "prototype", True, "span", "names")
    assert {(r.classifier, r.use_text, r.project) for r in map(hw_row_settings, HW_ROWS)} == {
        (c, t, p) for c in ("prototype", "gda") for t in (False, True) for p in (None, "span")}
    with pytest.raises(ValueError, match="did you mean 'gda\\+text\\+span'"):
        hw_row_settings("gda+span+text")
    with pytest.raises(ValueError, match="unknown method 'gda'"):
        check_methods(["gda"])  # a classifier setting is not a method of the default layout
    with pytest.raises(ValueError, match="unknown few-shot setting 'image'"):
        check_methods(["image"], "hw-fewshot")
    # from the CLI: one line, status 2, before any work
    assert main(["--quiet", "compare", "--layout", "hw-fewshot", "--datasets", "dtd",
                 "--methods", "lda+text", "--model", "tiny", "--checkpoint", tiny_ckpt,
                 "--data-root", str(coop_root), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--methods: unknown few-shot setting 'lda+text'" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_compare_fewshot_ncm_span_recomputed(tiny_ckpt, coop_root, tmp_path):
    """The default layout's few-shot NCM cells of ``span`` (U^T U of the unnormalised
    embeddings, U from the raw names' text features; class means, cosine) and ``image`` on
    the tiny DTD, where the accuracies are far from 0 and 100; i0t has no few-shot form."""
    from crossgap_jax.cli import main
    from crossgap_jax.data.decoding import load_image
    from crossgap_jax.models import create_clip

    out = tmp_path / "out.json"
    assert main(["--quiet", "compare", "--datasets", "dtd", "--methods", "image,span,i0t",
                 "--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(coop_root),
                 "--run-dir", str(tmp_path / "run"), "--batch-size", "8", "--shots",
                 ",".join(map(str, SHOTS)), "--fewshot-seeds", ",".join(map(str, SEEDS)),
                 "--span-classes", str(coop_root / "span.txt"), "--output", str(out)]) == 0
    cells = json.loads(out.read_text())["results"]["datasets"]["dtd"]["fewshot"]["cells"]
    clip = create_clip("tiny", seed=3)
    split = json.loads((coop_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())

    def encode(rows):  # unnormalised, as the few-shot NCM prototypes average them
        ims = [load_image(coop_root / "dtd" / "images" / r[0]) for r in rows]
        return np.asarray(clip.encode_image(clip.preprocess(ims)), np.float64)

    ytr = np.array([r[1] for r in split["train"]])
    yte = np.array([r[1] for r in split["test"]])
    xtr, xte = encode(split["train"]), encode(split["test"])
    names = np.asarray(clip.encode_text(clip.tokenize(SPAN_NAMES)), np.float64)
    feats = {"image": (xtr, xte), "span": (torch_span(names, xtr), torch_span(names, xte))}
    seen = set()
    for row, (tr, te) in feats.items():
        for k in SHOTS:
            accs = []
            for seed in SEEDS:
                idx = dassl_indices(ytr, k, seed, SHOTS)
                protos = _unit(np.stack([tr[idx][ytr[idx] == c].mean(0) for c in range(3)]))
                accs.append(100.0 * np.mean((_unit(te) @ protos.T).argmax(1) == yte))
            got = cells[row]["shots"][str(k)]
            assert [got["per_seed"][str(s)] for s in SEEDS] == pytest.approx(accs, abs=1e-6), (
                row, k)
            seen.update(accs)
    assert len(seen) > 3 and not seen <= {0.0, 100.0}  # the check can tell features apart
    assert cells["span"]["shots"] != cells["image"]["shots"]
    assert "no few-shot NCM form" in cells["i0t"]["skipped"]
