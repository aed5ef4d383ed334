"""Bad command lines (issue 12 items 9-12, 16, 19): each case with its exit status and the
words stderr must contain. Nothing here computes: every case fails in the parser or in the
validation that runs before any model or dataset work (checked by an empty run folder)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

from crossgap_jax.cli import checks, main, options
from crossgap_jax.demo import DEMO_CHECKPOINT
from crossgap_jax.models.checkpoint.native import native_config

DEMO_ARCH = native_config(DEMO_CHECKPOINT).name  # whatever model the shipped file holds


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """No network, and empty weight caches (nothing is found, nothing big is loaded)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CROSSGAP_JAX_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hf"))


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    """A generic image folder: 3 classes x 3 small random images."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "fox"):
        (root / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return root


DEMO = ["--pretrained", "demo"]

# (id, argv, exit status, words stderr must contain). {data}: the real data root,
# {folder}: the generic image folder, {run}: a fresh run folder, {demo}: the demo file.
CASES = [
    # --- 9. typed, range-checked options -------------------------------------------------
    ("batch-size-0", ["encode", "--dataset", "caltech101", "--batch-size", "0"], 2,
     ["argument --batch-size: must be a positive integer, got 0"]),
    ("batch-size-neg", ["encode", "--dataset", "caltech101", "--batch-size", "-4"], 2,
     ["argument --batch-size: must be a positive integer, got -4"]),
    ("batch-size-abc", ["encode", "--dataset", "caltech101", "--batch-size", "abc"], 2,
     ["argument --batch-size: must be an integer, got 'abc'"]),
    ("max-queries-neg", ["retrieve", "--dataset", "caltech101", "--max-queries", "-3"], 2,
     ["argument --max-queries: must be a positive integer, got -3"]),
    ("max-gallery-0", ["reproduce", "--datasets", "caltech101", "--max-gallery", "0"], 2,
     ["argument --max-gallery: must be a positive integer, got 0"]),
    ("lr-negative", ["oti", "--dataset", "caltech101", "--learning-rate", "-1"], 2,
     ["argument --learning-rate: must be a positive number, got -1"]),
    ("lr-nan", ["oti", "--dataset", "caltech101", "--learning-rate", "nan"], 2,
     ["argument --learning-rate: must be a finite number, got nan"]),
    ("wd-negative", ["ovi", "--dataset", "coco_text", "--weight-decay", "-0.5"], 2,
     ["argument --weight-decay: must be a non-negative number, got -0.5"]),
    ("seed-negative", ["oti", "--dataset", "caltech101", "--seed", "-1"], 2,
     ["argument --seed: must be a non-negative integer, got -1"]),
    ("steps-zero", ["oti", "--dataset", "caltech101", "--oti-steps", "0"], 2,
     ["argument --oti-steps: must be a positive integer, got 0"]),
    ("shard-size-float", ["oti", "--dataset", "caltech101", "--shard-size", "2.5"], 2,
     ["argument --shard-size: must be an integer, got '2.5'"]),
    ("num-tokens-zero", ["analyze", "--dataset", "caltech101", "--num-tokens", "1,0"], 2,
     ["argument --num-tokens: must be comma-separated positive integers, got 0"]),
    ("record-steps-text", ["oti", "--dataset", "caltech101", "--record-steps", "5,x"], 2,
     ["argument --record-steps: must be comma-separated positive integers, got '5,x'"]),
    ("variants-unknown", ["classify", "--dataset", "caltech101", "--variants", "inter,foo"], 2,
     ["argument --variants: unknown variant(s) foo"]),
    ("template-no-slot", ["oti", "--dataset", "caltech101", "--template-sentence", "a photo"],
     2, ["argument --template-sentence: must contain exactly one '{}'"]),
    ("datasets-empty", ["reproduce", "--datasets", ","], 2,
     ["argument --datasets: must be one or more comma-separated names"]),
    # --- 10. options a command does not use are refused ----------------------------------
    ("encode-max-queries", ["encode", "--dataset", "caltech101", "--max-queries", "3"], 2,
     ["encode does not take --max-queries"]),
    ("encode-oti-steps", ["encode", "--dataset", "caltech101", "--oti-steps", "3"], 2,
     ["encode does not take --oti-steps"]),
    ("classify-shard-size", ["encode", "--dataset", "caltech101", "--shard-size", "3"], 2,
     ["encode does not take --shard-size"]),
    ("classify-record-steps", ["classify", "--dataset", "caltech101", "--record-steps", "3"],
     2, ["classify does not take --record-steps"]),
    ("oti-ovi-steps", ["oti", "--dataset", "caltech101", "--ovi-steps", "3"], 2,
     ["oti does not take --ovi-steps"]),
    ("analyze-num-pseudo", ["analyze", "--dataset", "caltech101", "--num-pseudo-tokens", "2"],
     2, ["analyze does not take --num-pseudo-tokens"]),
    ("demo-data-root", ["demo", "--data-root", "/tmp"], 2, ["demo does not take --data-root"]),
    ("list-checkpoint", ["list", "--checkpoint", "x"], 2, ["list does not take --checkpoint"]),
    # --- 11. names, roots, splits and checkpoints checked before any compute -------------
    ("preset-typo", ["encode", "--dataset", "caltech101", "--preset", "clip_vitb33",
                     "--data-root", "{data}"], 2,
     ["--preset clip_vitb33: unknown preset 'clip_vitb33'", "clip_vitb32"]),
    ("presets-second-typo", ["reproduce", "--datasets", "caltech101", "--presets",
                             "clip_vitb32,nope", "--data-root", "{data}", *DEMO], 2,
     ["--presets nope: unknown preset 'nope'"]),
    ("option-typo-and-missing", ["retrieve", "--datset", "caltech101", *DEMO], 2,
     ["required: --dataset", "--datset is not an option of this command",
      "did you mean '--dataset'?"]),
    ("dataset-typo", ["encode", "--dataset", "caltech10", "--data-root", "{data}", *DEMO], 2,
     ["--dataset caltech10: unknown dataset 'caltech10'", "caltech101"]),
    ("second-dataset-typo", ["reproduce", "--datasets", "caltech101,coco_txt", "--data-root",
                             "{data}", *DEMO], 2,
     ["--datasets coco_txt: unknown dataset 'coco_txt'"]),
    ("second-dataset-missing", ["reproduce", "--datasets", "caltech101,cub2011", "--data-root",
                                "{data}", *DEMO], 2, ["--datasets cub2011:", "CUB_200_2011"]),
    ("root-missing", ["encode", "--dataset", "caltech101", "--data-root", "/no/such/dir",
                      *DEMO], 2, ["--data-root /no/such/dir: no such file or directory"]),
    ("per-dataset-root-unknown", ["reproduce", "--datasets", "caltech101", "--data-root",
                                  "{data}", "--data-root", "coco_text=/x", *DEMO], 2,
     ["--data-root coco_text=/x: 'coco_text' is not one of --datasets (caltech101)"]),
    ("split-unknown", ["encode", "--dataset", "caltech101", "--split", "tset", "--data-root",
                       "{data}", *DEMO], 2,
     ["--split tset: caltech101 has no such split; valid: train, val, test"]),
    ("retrieve-split-fixed", ["retrieve", "--dataset", "cisi", "--split", "test",
                              "--data-root", "{data}", *DEMO], 2,
     ["--split test: cisi has fixed query and gallery splits"]),
    ("checkpoint-missing", ["encode", "--dataset", "caltech101", "--data-root", "{data}",
                            "--checkpoint", "/no/such/model.safetensors"], 2,
     ["--checkpoint /no/such/model.safetensors: no such file or directory"]),
    ("checkpoint-vs-model", ["encode", "--dataset", "caltech101", "--data-root", "{data}",
                             "--checkpoint", "{demo}", "--model", "ViT-B/32"], 2,
     [f"holds architecture '{DEMO_ARCH}', but --model ViT-B/32 asks for another",
      "drop --model"]),
    ("checkpoint-vs-explicit-preset", ["encode", "--dataset", "caltech101", "--data-root",
                                       "{data}", "--preset", "clip_vitl14", *DEMO], 2,
     [f"--pretrained demo holds architecture '{DEMO_ARCH}', but --preset clip_vitl14 "
      "(model ViT-L/14)"]),
    ("tokenizer-missing", ["encode", "--dataset", "caltech101", "--data-root", "{data}",
                           "--tokenizer", "/no/spiece.model", *DEMO], 2,
     ["--tokenizer /no/spiece.model: no such file"]),
    # --- 12. list with a missing root ----------------------------------------------------
    ("list-root-missing", ["list", "--data-root", "/no/such/dir"], 2,
     ["--data-root /no/such/dir: no such file or directory"]),
    # --- 16. library errors in CLI words -------------------------------------------------
    ("pretrained-tag-unknown", ["encode", "--dataset", "imagefolder", "--data-root",
                                "{folder}", "--model", "tiny", "--pretrained", "nosuchtag"], 2,
     ["--pretrained nosuchtag: pretrained tag 'nosuchtag'"]),
    ("model-unknown", ["encode", "--dataset", "imagefolder", "--data-root", "{folder}",
                       "--model", "ViT-B/33"], 2,
     ["--model ViT-B/33: unknown CLIP architecture 'ViT-B/33'"]),
    ("arch-without-openai-weights", ["encode", "--dataset", "imagefolder", "--data-root",
                                     "{folder}", "--model", "tiny"], 2,
     ["--preset clip_vitb32: OpenAI released no weights for 'tiny'"]),
    ("offline-release-missing", ["encode", "--dataset", "imagefolder", "--data-root",
                                 "{folder}", "--model", "ViT-B-16"], 2,
     ["--preset clip_vitb32: checkpoint not in the cache and offline mode is on",
      "or pass --checkpoint PATH (a copy of it)"]),
    ("feature-type-mismatch", ["retrieve", "--dataset", "imagefolder", "--data-root",
                               "{folder}", "--query-type", "ovi", *DEMO], 2,
     ["OVI inverts text features"]),
]


def _fill(argv, shared, folder, run):
    subs = {"{data}": str(shared) if shared else "", "{folder}": str(folder), "{demo}":
            DEMO_CHECKPOINT}
    out = [subs.get(a, a) for a in argv]
    if any(a in options.RUN_COMMANDS for a in out[:1]) and "--run-dir" not in out \
            and "does not take" not in " ".join(out):
        out += ["--run-dir", str(run)]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(case, imagefolder, tmp_path, capsys, request):
    name, argv, status, words = case
    shared = None
    if any("{data}" in a for a in argv):
        shared = request.getfixturevalue("shared_data")
    run = tmp_path / "run"
    argv = _fill(argv, shared, imagefolder, run)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == status, err
    for w in words:
        assert w in err, (w, err)
    assert "Traceback" not in err
    # Nothing was computed: no feature or inversion file in the run folder.
    made = [p for p in run.rglob("*") if p.is_file()] if run.exists() else []
    assert not [p for p in made if "features" in p.parts or "inversions" in p.parts], made


def test_tfds_without_tensorflow_datasets(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    rc = main(["encode", "--dataset", "tfds:oxford_iiit_pet", *DEMO,
               "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().count("\n") == 0  # one line
    assert "--dataset tfds:oxford_iiit_pet needs tensorflow-datasets: " \
           "pip install 'crossgap-jax[tfds]'" in err


@pytest.mark.slow
def test_ctrl_c_says_what_was_saved_and_how_to_resume(monkeypatch, imagefolder, tmp_path,
                                                      capsys):
    """Ctrl-C after the first inversion shard: exit 130, one line naming the kept shards
    and the exact command that resumes (the shard is reused by that command)."""
    from crossgap_jax.inversion import resumable

    real = resumable.atomic_write_bytes
    calls = {"n": 0}

    def interrupt_after_first_shard(path, data, *tag):
        real(path, data, *tag)
        if os.path.basename(path).startswith("shard-"):
            calls["n"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(resumable, "atomic_write_bytes", interrupt_after_first_shard)
    run = tmp_path / "run"
    argv = ["--quiet", "oti", "--dataset", "imagefolder", "--data-root", str(imagefolder),
            *DEMO, "--oti-steps", "2", "--shard-size", "4", "--batch-size", "4",
            "--run-dir", str(run)]
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 130
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "interrupted; kept 1 finished inversion shard(s)" in lines[0]
    assert "resume with: crossgap-jax --quiet oti --dataset imagefolder --data-root " \
           f"{imagefolder} --pretrained demo --oti-steps 2" in lines[0]
    assert calls["n"] == 1


def test_cli_words_rewrites_keyword_advice():
    assert checks.cli_words("no default checkpoint for 'x': pass checkpoint= a file") == \
        "no default checkpoint for 'x': pass --checkpoint a file"
    assert checks.cli_words("or pass checkpoint=PATH to a copy of it.") == \
        "or pass --checkpoint PATH (a copy of it)."
    assert "--data-root" in checks.cli_words("no data root: pass root=... or set X")


@pytest.mark.parametrize("text,expect", [("7", 7), ("1", 1)])
def test_positive_int_accepts(text, expect):
    assert options.positive_int(text) == expect


def test_int_lists_parse_exactly():
    assert options.positive_int_list("17,50,150") == (17, 50, 150)
    assert options.positive_int_list("") == ()
    assert options.name_list(" caltech101 , coco_text,") == ["caltech101", "coco_text"]


@pytest.mark.parametrize("argv, expect", [
    (["reprodcue"], "invalid choice: 'reprodcue'; did you mean 'reproduce'?"),
    (["retrieve", "--dataset", "caltech101", "--max-querys", "3"],
     "retrieve does not take --max-querys; did you mean '--max-queries'?"),
    (["retrieve", "--dataset", "caltech101", "--dtype", "float3"],
     "invalid choice: 'float3'; did you mean 'float32'?"),
    (["retrieve", "--dataset", "caltech10", "--pretrained", "demo"],
     "did you mean 'caltech101'?"),
    (["retrieve", "--dataset", "demo_caltech101", "--model", "ViT-B/33"],
     "did you mean 'ViT-B/32'?"),
    (["reproduce", "--preset", "clip_vitb23", "--datasets", "demo_caltech101"],
     "did you mean 'clip_vitb32'?"),
])
def test_typos_get_one_line_and_a_suggestion(argv, expect, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own errors exit
        status = e.code
    assert status == 2
    err = capsys.readouterr().err
    assert expect in err and "usage:" not in err
    assert len(err.strip().splitlines()) == 1
