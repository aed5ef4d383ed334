"""Issue 22 item 6: every check on options, names and paths runs before the first item is
encoded. Each bad command line below must fail with its one-line message (status 2) while
the encoder is replaced by a sentinel that fails loudly if encoding ever starts."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from crossgap_jax.cli import main
from crossgap_jax.pipeline import run as runmod


class EncodingStarted(Exception):  # noqa: N818 - a sentinel, not an error of the product
    """Raised by the patched encoder: a check came after encoding had started."""


@pytest.fixture(autouse=True)
def _no_encoding(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CROSSGAP_JAX_OFFLINE", "1")

    def sentinel(*a, **k):
        raise EncodingStarted("encoding started before the checks finished")

    monkeypatch.setattr(runmod, "cached_split_features", sentinel)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A flat image folder (one split, ``all``): 2 classes x 2 images."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    return str(root)


DEMO = ["--pretrained", "demo"]
# (argv, fragment of the one-line message); FOLDER is replaced by the image folder.
CASES = [
    # a reader option the reader does not take: one line before any work (was a TypeError
    # traceback from inside the reader)
    (["retrieve", "--dataset", "imagefolder?label=x", "--data-root", "FOLDER", *DEMO],
     "imagefolder: unknown option 'label' (did you mean 'labels'?); its options: labels, "
     "label_column, classnames, empty_classes, replacements"),
    # late before issue 22: found after both splits were encoded
    (["classify", "--dataset", "demo_caltech101", "--variants", "inter,isoclip-ncm", *DEMO],
     "classify variant isoclip-ncm: IsoCLIP needs (k_top, k_bottom) for image tasks: pass "
     "--isoclip-k TOP,BOTTOM"),
    (["classify", "--dataset", "demo_caltech101", "--variants", "fewshot", "--fewshot-types",
      "image,isoclip", *DEMO], "few-shot feature type isoclip: IsoCLIP needs (k_top, k_bottom)"),
    (["classify", "--dataset", "imagefolder", "--data-root", "FOLDER", "--variants", "inter,ncm",
      *DEMO], "NCM / few-shot prototypes come from the 'train' split of imagefolder, which it "
              "lacks: imagefolder: unknown split 'train'; valid splits: all"),
    (["classify", "--dataset", "imagefolder", "--data-root", "FOLDER", "--variants", "fewshot",
      "--fewshot-types", "image", *DEMO], "train"),
    (["retrieve", "--dataset", "demo_caltech101", "--query-type", "isoclip", "--gallery-type",
      "isoclip", *DEMO], "--isoclip-k TOP,BOTTOM"),
    # checked before the model loads
    (["classify", "--dataset", "demo_caltech101", "--variants", "fewshot", "--fewshot-types",
      "pca", *DEMO], "few-shot feature type pca needs --pca-k"),
    (["classify", "--dataset", "demo_caltech101", "--variants", "pca-ncm", *DEMO], "--pca-k"),
    (["retrieve", "--dataset", "caltech1O1", *DEMO], "caltech101"),
    (["retrieve", "--dataset", "imagefolder", "--data-root", "/no/such/root", *DEMO],
     "/no/such/root: no such file or directory"),
    (["encode", "--dataset", "demo_caltech101", "--split", "nosuch", *DEMO],
     "--split nosuch: demo_caltech101 has no such split"),
    (["classify", "--dataset", "demo_caltech101", "--preset", "clip_vitb23"], "clip_vitb32"),
    (["retrieve", "--dataset", "demo_caltech101", "--checkpoint", "/no/such.safetensors"],
     "/no/such.safetensors"),
    (["compare", "--datasets", "demo_caltech101", "--methods", "imagee", *DEMO],
     "unknown method 'imagee'"),
    (["reproduce", "--datasets", "demo_caltech101,nosuchset", *DEMO], "nosuchset"),
    # checked by the library before its first encoding
    (["retrieve", "--dataset", "demo_caltech101", "--query-type", "text", *DEMO],
     "holds images"),
    (["indicators", "--dataset", "demo_caltech101", "--indicator-pairs", "image-imagee",
      *DEMO], "unknown indicator pair type"),
    (["analyze", "--dataset", "demo_caltech101_text", *DEMO],
     "analyze runs OTI on an image dataset's queries"),
]


@pytest.mark.parametrize("argv,fragment", CASES, ids=[" ".join(c[0][:4]) for c in CASES])
def test_validation_errors_come_before_encoding(argv, fragment, folder, tmp_path, capsys):
    argv = [folder if a == "FOLDER" else a for a in argv]
    status = main(["--quiet", *argv, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert fragment in err, err
    assert err.count("\n") == 1 and err.startswith(f"crossgap-jax {argv[0]}: error: ")


@pytest.mark.parametrize("argv", [
    ["retrieve", "--bogus", "1"],                  # an option no command has
    ["classify", "--dataset", "x", "--batch-size", "0"],  # out of range
    ["reproduce", "--datasets"],                   # a missing value
    ["frobnicate"],                                # an unknown command
    ["classify", "--dataset", "x", "--variants", "inter,bogus"],  # an unknown variant
])
def test_argument_errors_come_before_jax_is_imported(argv):
    """A malformed command line is refused by the parser alone: in a fresh interpreter the
    error is printed and the exit code is 2 with neither JAX nor the models imported."""
    code = ("import sys\n"
            "from crossgap_jax.cli import main\n"
            "try:\n"
            f"    rc = main({argv!r})\n"
            "except SystemExit as e:\n"
            "    rc = e.code\n"
            "print('RC', rc, 'jax' in sys.modules, 'crossgap_jax.models' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                             os.path.abspath(__file__)))))
    assert out.stdout.strip().splitlines()[-1] == "RC 2 False False", out.stdout + out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("crossgap-jax") and "error:" in line
