"""Issue 22 item 8: OVI inverts the authors' target texts (``_`` -> space in every text),
the text->text baseline encodes the raw text, and ``ovi_text="raw"`` keeps the raw text."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from support.reference_protocol import ovi_target_texts
from support.tiny_models import tiny_clip

from crossgap_jax.data import TextSplit
from crossgap_jax.pipeline import measure
from crossgap_jax.pipeline.features import encode_split
from crossgap_jax.pipeline.presets import preset
from crossgap_jax.pipeline.run import Run
from crossgap_jax.pipeline.settings import RunSettings

TEXTS = ["a_red_car on_the road", "snake_case words here", "no underscore at all",
         "trailing_", "__init__ of a module"]


@pytest.fixture(scope="module")
def clip():
    return tiny_clip(3)


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t, "label": i % 2}) + "\n"
                            for i, t in enumerate(TEXTS)))
    return str(path)


def _run(tmp_path, clip, corpus, ovi_text):
    settings = RunSettings(preset("clip_vitb32"), ovi_text=ovi_text)
    run = Run(str(tmp_path / f"run-{ovi_text}"), settings, clip, data_root=corpus,
              progress=False)
    targets = []

    def inverted(fs, method):  # the targets OVI is given, instead of inverting them
        targets.append((method, fs))
        return fs

    object.__setattr__(run, "inverted", inverted)
    return run, targets


def _oracle(clip, texts):
    """Features of ``texts`` encoded on their own (a split built here, not by the run)."""
    split = TextSplit(name="oracle", split="x", items=[f"d{i}" for i in range(len(texts))],
                      texts=list(texts))
    return np.asarray(encode_split(clip, split, progress=False).features)


@pytest.mark.parametrize("ovi_text", ["authors", "raw"])
def test_ovi_targets_and_the_text_baseline(tmp_path, clip, corpus, ovi_text):
    run, targets = _run(tmp_path, clip, corpus, ovi_text)
    split = run.split("jsonl", "all")
    assert split.texts == TEXTS  # the split itself keeps the raw text
    ovi = run.side_features(split, "ovi")
    base = run.side_features(split, "text")
    raw = _oracle(clip, TEXTS)
    authors = _oracle(clip, ovi_target_texts(TEXTS))
    assert not np.allclose(raw[0], authors[0])  # the test can tell the two apart
    assert [m for m, _ in targets] == ["ovi"]
    assert ovi.items == base.items == [f"d{i}" for i in range(len(TEXTS))]
    np.testing.assert_allclose(base.features, raw, rtol=0, atol=1e-6)
    want = authors if ovi_text == "authors" else raw
    np.testing.assert_allclose(ovi.features, want, rtol=0, atol=1e-6)
    # rows without an underscore are the same text either way
    np.testing.assert_allclose(ovi.features[2], raw[2], rtol=0, atol=1e-6)


def test_retrieve_inverts_the_authors_texts_and_keeps_the_gallery_raw(tmp_path, clip,
                                                                       corpus):
    run, targets = _run(tmp_path, clip, corpus, "authors")
    m = measure.retrieve(run, "jsonl", "ovi", "text")
    ((method, fs),) = targets
    assert method == "ovi" and m["query_type"] == "ovi"
    np.testing.assert_allclose(fs.features, _oracle(clip, ovi_target_texts(TEXTS)), atol=1e-6)
    # the two texts give two cache entries (the feature key hashes the texts)
    metas = {json.dumps(f.meta["texts_sha256"]) for f in
             (run.side_features(run.split("jsonl", "all"), "text"), fs)}
    assert len(metas) == 2


def test_an_unknown_mode_is_refused(tmp_path, clip, corpus):
    from crossgap_jax.pipeline.prompts import ovi_target_split

    split = TextSplit(name="x", split="y", items=["a"], texts=["a_b"])
    assert ovi_target_split(split, "raw") is split
    assert ovi_target_split(split).texts == ["a b"]
    assert dataclasses.replace(split).texts == ["a_b"]
    with pytest.raises(ValueError, match="ovi_text must be one of"):
        ovi_target_split(split, "spaces")
