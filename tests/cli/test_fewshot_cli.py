"""``crossgap-jax fewshot`` end to end on the tiny model and a tiny CoOp-format dataset (DTD
layout, written here): every accuracy recomputed from independently encoded features with the
Dassl sampler reimplementation and the torch classifiers of test_fewshot_hw."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from support.fewshot_reference import dassl_indices, torch_gda, torch_prototype, torch_span

CLASSES = ["banded", "blotchy_dots", "cracked"]
SHOTS = (1, 2, 4)
SEEDS = (1, 2)
SPAN_NAMES = [f"thing number {i}" for i in range(40)]


@pytest.fixture(scope="module")
def coop_root(tmp_path_factory):
    """dtd/images/<class>/*.png + split_zhou_DescribableTextures.json: train labels first
    appear as 1, 0, 2; class 2 has 3 training images (4-shot repeats)."""
    root = tmp_path_factory.mktemp("coop")
    rng = np.random.default_rng(0)
    base = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]])
    split = {"train": [], "val": [], "test": []}
    labels = {"train": [1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 2, 1, 0], "val": [0, 1, 2],
              "test": [0, 1, 2, 2, 1, 0, 0, 2, 1, 1]}
    for part, ys in labels.items():
        for i, y in enumerate(ys):
            rel = f"{CLASSES[y]}/{part}_{i:02d}.png"
            path = root / "dtd" / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            px = np.clip(base[y] + rng.normal(0, 60, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(path)
            split[part].append([rel, y, CLASSES[y]])
    (root / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    (root / "span.txt").write_text("\n".join(SPAN_NAMES) + "\n")
    return root


@pytest.fixture(scope="module")
def clip():
    from crossgap_jax.models import create_clip

    return create_clip("tiny", seed=3)  # the model of the tiny_ckpt fixture


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _images(clip, root, rows):
    from crossgap_jax.data.decoding import load_image

    ims = [load_image(root / "dtd" / "images" / r[0]) for r in rows]
    return np.asarray(clip.encode_image(clip.preprocess(ims)), np.float64)


def _text(clip, texts):
    return np.asarray(clip.encode_text(clip.tokenize(texts)), np.float64)


def _run(tiny_ckpt, root, tmp_path, *extra):
    from crossgap_jax.cli import main

    out = tmp_path / "out.json"
    argv = ["--quiet", "fewshot", "--dataset", "dtd", "--model", "tiny", "--checkpoint",
            tiny_ckpt, "--data-root", str(root), "--run-dir", str(tmp_path / "run"),
            "--shots", ",".join(map(str, SHOTS)), "--seeds", ",".join(map(str, SEEDS)),
            "--output", str(out), *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())["results"]


@pytest.mark.slow
@pytest.mark.parametrize("classifier,use_text,project", [
    ("prototype", False, None), ("gda", True, None), ("prototype", True, "zeroshot"),
    ("gda", False, "names"),
])
def test_fewshot_command_recomputed(tiny_ckpt, coop_root, tmp_path, clip, capsys, classifier,
                                    use_text, project):
    from crossgap_jax.pipeline.prompts import IMAGENET_TEMPLATES

    extra = ["--classifier", classifier] + (["--use-text"] if use_text else [])
    if project:
        extra += ["--project", "span", "--span-source", project, "--span-classes",
                  str(coop_root / "span.txt")]
    res = _run(tiny_ckpt, coop_root, tmp_path, *extra)
    printed = capsys.readouterr().out
    split = json.loads((coop_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    ytr = np.array([r[1] for r in split["train"]])
    yte = np.array([r[1] for r in split["test"]])
    xtr = _unit(_images(clip, coop_root, split["train"]))
    xte = _unit(_images(clip, coop_root, split["test"]))
    text = None
    if use_text:  # DTD's CoOp prompt, '_' -> space, one prompt per class: normalised
        text = _unit(_text(clip, [f"{c.replace('_', ' ')} texture." for c in CLASSES]))
    if project == "zeroshot":
        per_t = np.stack([_unit(_text(clip, [t.format(n) for n in SPAN_NAMES]))
                          for t in IMAGENET_TEMPLATES], axis=1)
        span_t = _unit(per_t.mean(1))
    elif project == "names":
        span_t = _text(clip, SPAN_NAMES)
    if project:
        xtr, xte = torch_span(span_t, xtr), torch_span(span_t, xte)
        assert res["span"]["source"] == project and res["span"]["dims"] == 16
    oracle = {"prototype": torch_prototype, "gda": torch_gda}[classifier]
    want = {}
    for seed in SEEDS:
        accs = []
        for k in SHOTS:
            idx = dassl_indices(ytr, k, seed, SHOTS)
            assert res["support"][str(seed)][str(k)] == [split["train"][i][0] for i in idx]
            scores = oracle(xtr[idx], ytr[idx], xte, text)
            accs.append(100.0 * np.mean(scores.argmax(1) == yte))
        want[str(seed)] = accs
        assert res["per_seed"][str(seed)] == pytest.approx(accs, abs=1e-4)
    assert res["mean"] == pytest.approx(np.mean([want[str(s)] for s in SEEDS], 0), abs=1e-4)
    if classifier == "gda" and not use_text:  # 1-shot: degenerate, said in output and JSON
        assert set(res["degenerate"][str(SEEDS[0])]) == {"1"}
        assert "Degenerate (1-shot)" in printed
        assert res["per_seed"]["1"][0] == pytest.approx(100 * np.mean(yte == 0), abs=1e-4)
    else:
        assert res["degenerate"] == {}
    assert f"seed=1, shot=4, acc={res['per_seed']['1'][2]:.2f}" in printed
    assert "Average:  tensor([" in printed


@pytest.mark.slow
def test_fewshot_augmented_support(tiny_ckpt, coop_root, tmp_path, clip, capsys):
    from crossgap_jax.data.augment import augmented_view
    from crossgap_jax.data.decoding import load_image

    res = _run(tiny_ckpt, coop_root, tmp_path, "--classifier", "prototype",
               "--augment-seed", "5")
    assert res["support_preprocessing"]["seed"] == 5
    split = json.loads((coop_root / "dtd" / "split_zhou_DescribableTextures.json").read_text())
    ytr = np.array([r[1] for r in split["train"]])
    yte = np.array([r[1] for r in split["test"]])
    views = [augmented_view(load_image(coop_root / "dtd" / "images" / r[0]),
                            np.random.default_rng([5, i]), **clip.preprocess_options)
             for i, r in enumerate(split["train"])]
    xtr = _unit(np.asarray(clip.encode_image(np.stack(views)), np.float64))
    xte = _unit(_images(clip, coop_root, split["test"]))
    for seed in SEEDS:
        accs = [100.0 * np.mean(torch_prototype(xtr[idx], ytr[idx], xte, None).argmax(1)
                                == yte)
                for idx in (dassl_indices(ytr, k, seed, SHOTS) for k in SHOTS)]
        assert res["per_seed"][str(seed)] == pytest.approx(accs, abs=1e-4)
    # its table: one row, one column per shot (the several-settings table: compare
    # --layout hw-fewshot, tests/pipeline/test_compare_hw_fewshot.py)
    out = capsys.readouterr().out
    assert "| method | 1-shot | 2-shot | 4-shot |" in out
    assert "| prototype | " + " | ".join(f"{v:.2f}" for v in res["mean"]) + " |" in out


def test_fewshot_bad_input(tiny_ckpt, coop_root, tmp_path, capsys):
    from crossgap_jax.cli import main

    common = ["--dataset", "dtd", "--model", "tiny", "--checkpoint", tiny_ckpt,
              "--data-root", str(coop_root), "--run-dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as e:
        main(["--quiet", "fewshot", "--classifier", "lda", *common])
    assert e.value.code == 2
    assert "invalid choice: 'lda'" in capsys.readouterr().err
    bad = tmp_path / "one.txt"
    bad.write_text("tench\n")
    assert main(["--quiet", "fewshot", "--project", "span", "--span-classes", str(bad),
                 *common]) == 2
    assert f"span class list {bad}: 1 name(s); the span's covariance needs at least 2" \
        in capsys.readouterr().err
    blank = tmp_path / "blank.txt"
    blank.write_text("tench\n\ngoldfish\n")
    assert main(["--quiet", "fewshot", "--project", "span", "--span-source", "names",
                 "--span-classes", str(blank), *common]) == 2
    assert f"span class list {blank}: line 2 is blank" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--span-source", "names"], ["--span-reduce", "4"],
                                   ["--span-classes", "span.txt"]])
def test_fewshot_span_options_without_project_are_refused(tiny_ckpt, coop_root, tmp_path,
                                                          capsys, extra):
    from crossgap_jax.cli import main

    extra = [str(coop_root / e) if e.endswith(".txt") else e for e in extra]
    rc = main(["--quiet", "fewshot", "--dataset", "dtd", "--model", "tiny", "--checkpoint",
               tiny_ckpt, "--data-root", str(coop_root), "--run-dir", str(tmp_path / "run"),
               *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert f"{extra[0]} only apply with --project span" in err
    assert not (tmp_path / "run").exists()


def test_fewshot_span_result_names_its_class_list(tiny_ckpt, coop_root, tmp_path, capsys):
    import hashlib

    from crossgap_jax.cli import main

    names = coop_root / "span.txt"
    res = _run(tiny_ckpt, coop_root, tmp_path, "--classifier", "prototype", "--project",
               "span", "--span-source", "names", "--span-classes", str(names))
    assert res["span"]["classes"] == str(names)
    assert res["span"]["classes_sha256"] == hashlib.sha256(names.read_bytes()).hexdigest()
    assert res["span"]["names_sha256"] == hashlib.sha256(
        "\n".join(SPAN_NAMES).encode()).hexdigest()
    # zeroshot span without ImageNet under the root: the layout error in full, not cut
    rc = main(["--quiet", "fewshot", "--dataset", "dtd", "--model", "tiny", "--checkpoint",
               tiny_ckpt, "--data-root", str(coop_root), "--run-dir", str(tmp_path / "r2"),
               "--project", "span"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "the few-shot span needs the ImageNet class names" in err
    assert err.count("{") == err.count("}") and err.endswith(")")


def test_fewshot_names_classes_short_of_a_shot(tiny_ckpt, coop_root, tmp_path, capsys):
    from crossgap_jax.pipeline import hw_table

    res = _run(tiny_ckpt, coop_root, tmp_path, "--classifier", "prototype")
    # training counts per class in coop_root: banded 5, blotchy_dots 5, cracked 3
    assert res["short_classes"] == {"4": ["cracked"]}
    out = capsys.readouterr().out
    assert "Fewer training images than shots (drawn with replacement): 4-shot: cracked\n" \
        in out
    many = {**res, "short_classes": {"16": [f"c{i}" for i in range(13)], "8": ["c0"]}}
    assert hw_table(many).rstrip().splitlines()[-1] == (
        "Fewer training images than shots (drawn with replacement): 16-shot: "
        + ", ".join(f"c{i}" for i in range(10)) + " +3 more; 8-shot: c0")
