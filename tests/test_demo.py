"""The offline demo: shipped checkpoint + card, and ``run_demo(quick=True)`` end to end."""

from __future__ import annotations

import json
import math
import os
import time

import pytest

from crossgap_jax import demo

pytestmark = pytest.mark.skipif(not os.path.isfile(demo.DEMO_CHECKPOINT),
                                reason="shipped demo checkpoint missing "
                                       "(python -m crossgap_jax.train.digits builds it)")


def test_shipped_checkpoint_and_card():
    from crossgap_jax.models.checkpoints import sha256_file

    size = os.path.getsize(demo.DEMO_CHECKPOINT)
    assert size <= 20 * 1024 * 1024
    with open(demo.DEMO_CARD) as f:
        card = json.load(f)
    assert card["sha256"] == sha256_file(demo.DEMO_CHECKPOINT)
    assert card["size_bytes"] == size
    assert card["command"].startswith("python -m crossgap_jax.train.digits")
    assert isinstance(card["seed"], int)
    clip = demo.load_demo_clip()
    from crossgap_jax.train.trainer import params_sha256

    assert card["params_sha256"] == params_sha256(clip.params)
    assert clip.config.name == card["architecture"]["name"] == "crossgap-digits"
    assert clip.config.text.vocab_size == 49408  # the real tokenizer's vocabulary


def _finite(x) -> bool:
    if isinstance(x, dict):
        return all(_finite(v) for v in x.values())
    if isinstance(x, (list, tuple)):
        return all(_finite(v) for v in x)
    if isinstance(x, float):
        return math.isfinite(x)
    return True


def test_run_demo_quick(tmp_path):
    t0 = time.perf_counter()
    out = demo.run_demo(out_dir=str(tmp_path), quick=True, progress=False, verbose=False)
    seconds = time.perf_counter() - t0
    assert os.path.isfile(out["plot"]) and os.path.getsize(out["plot"]) > 10_000
    assert os.path.isfile(out["json"])
    res = out["results"]
    assert _finite(res)
    for key in ("image->image", "OTI->image"):
        assert 0 < res["image"][key]["mAP"] <= 100
    for key in ("text->text", "OVI->text"):
        assert 0 < res["text"][key]["mAP"] <= 100
    assert len(res["zero_shot"]) == 3
    assert 0 <= res["gap"]["modality_gap"] <= 2
    for needle in ("image->image mAP", "OTI->image mAP", "text->text mAP", "OVI->text mAP",
                   "zero-shot top-1 inter", "zero-shot top-1 intra OTI", "modality gap"):
        assert needle in out["table"]
    with open(out["json"]) as f:
        assert json.load(f)["quick"] is True
    # Generous bound: the machine is shared; the quick demo itself takes ~20-40 s.
    assert seconds < 120, seconds
