"""Bad model inputs (issue 12, items 1-8): every case raises a clear error naming the thing
and the fix, or gives the right value. Every family: CLIP (``tiny``), an OpenCLIP-style
CLIP (``tiny-gelu``: exact GELU), SigLIP (``siglip-tiny``), SLIP (``slip-tiny``).

Right values are checked against an independent computation: the token embeddings
gathered with NumPy indexing and run through the family's embedding-level encoder, the
feature of the tokenizer-padded ids, OpenAI's reference tokenizer, or a pure-Python
re-derivation of the 8-bit scaling.
"""

from __future__ import annotations

import io

import jax
import numpy as np
import pytest
from PIL import Image
from support import family_factories as F

from crossgap_jax.data.decoding import RESCALED_FROM, load_image, to_rgb
from crossgap_jax.data.preprocess import preprocess_image
from crossgap_jax.models import CLIP, get_config
from crossgap_jax.models.families import family_of

FAMILIES = ["tiny", "tiny-gelu", "siglip-tiny", "slip-tiny"]


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> str:
    pytest.importorskip("sentencepiece")
    return F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model"))


def _random_bundle(arch: str, seed: int = 3, **kw) -> CLIP:
    """A bundle with NumPy-random params of the family's shapes (no compiled ``init``:
    ``create_clip`` compiles both towers, tens of seconds on a busy CPU)."""
    config = get_config(arch)
    rng = np.random.default_rng(seed)

    def leaf(path, s):
        name = jax.tree_util.keystr(path)
        x = rng.normal(0.0, 0.05, s.shape).astype(np.float32)
        return x + 1.0 if "scale" in name else x

    params = jax.tree_util.tree_map_with_path(leaf, family_of(config).param_shapes(config))
    return CLIP(config, params, info={"source": "random numpy"}, **kw)


@pytest.fixture(scope="module")
def bundles(spiece) -> dict:
    return {arch: _random_bundle(arch, tokenizer_file=spiece if "siglip" in arch else None)
            for arch in FAMILIES}


def _valid_ids(b) -> np.ndarray:
    """Two tokenizer rows of the model (SigLIP: full context; CLIP: SOT ... EOT, zeros)."""
    return b.tokenize(["a dog sitting on a bench", "two cats"])


def _reference_feature(b, ids: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Independent path: NumPy gather of the embedding table, then the family's
    embedding-level encoder (no id gather in JAX)."""
    fam = family_of(b.config)
    table = np.asarray(fam.embed_tokens(b.params, np.arange(b.config.text.vocab_size),
                                        config=b.config))
    emb = table[ids]  # NumPy fancy indexing: raises itself on an out-of-range id
    return np.asarray(fam.encode_text_embeddings(b.params, emb, np.asarray(pool, np.int32),
                                                 config=b.config))


# --- raising cases: (name, mutate(ids, b) -> (ids, eot_index), error type, words) --------
def _set(row, col, value):
    def f(ids, b):
        ids = ids.astype(np.int64)
        ids[row, col if col >= 0 else ids.shape[1] + col] = (
            value(b) if callable(value) else value)
        return ids, None
    return f


RAISES = [
    ("id == vocab", _set(1, 2, lambda b: b.config.text.vocab_size), ValueError,
     ["row 1", "column 2", "outside the vocabulary", "[0, {vocab})"]),
    ("id 60000", _set(0, 3, 60000), ValueError,
     ["token id 60000", "row 0", "column 3", "[0, {vocab})"]),
    ("id -1 (no wrap to EOT)", _set(0, 1, -1), ValueError,
     ["token id -1", "row 0", "column 1", "[0, {vocab})"]),
    ("id 2**32 + 5 (no int32 wrap)", _set(1, 0, 2**32 + 5), ValueError,
     ["token id 4294967301", "row 1", "column 0"]),
    ("non-integral float ids", lambda ids, b: (ids.astype(np.float32) + 0.5, None), TypeError,
     ["must be integers", "float32"]),
    ("1-D ids", lambda ids, b: (ids[0], None), ValueError, ["(N, L)"]),
    ("ids longer than the context",
     lambda ids, b: (np.concatenate([ids, ids[:, :3]], axis=1), None), ValueError,
     ["{ctx3} positions", "more than the context length {ctx}", "bundle.tokenize"]),
    ("no positions", lambda ids, b: (ids[:, :0], None), ValueError, ["no positions"]),
    ("eot_index == L", lambda ids, b: (ids, np.array([1, ids.shape[1]])), ValueError,
     ["eot_index {ctx} for row 1", "outside the sequence", "0..{ctx1}"]),
    ("eot_index -1 (no wrap)", lambda ids, b: (ids, np.array([-1, 1])), ValueError,
     ["eot_index -1 for row 0", "outside the sequence"]),
    ("eot_index wrong shape", lambda ids, b: (ids, np.array([1, 1, 1])), ValueError,
     ["eot_index must be (2,)"]),
]


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("case", RAISES, ids=[c[0] for c in RAISES])
def test_bad_text_inputs_raise(bundles, arch, case):
    _, mutate, err, words = case
    b = bundles[arch]
    ids, eot = mutate(_valid_ids(b), b)
    t = b.config.text
    fmt = dict(vocab=t.vocab_size, ctx=t.context_length, ctx1=t.context_length - 1,
               ctx3=t.context_length + 3)
    with pytest.raises(err) as info:
        b.encode_text(ids, eot)
    msg = str(info.value)
    for w in words:
        assert w.format(**fmt) in msg, (w.format(**fmt), msg)


@pytest.mark.parametrize("arch", ["tiny", "tiny-gelu", "slip-tiny"])
def test_clip_row_without_eot_raises(bundles, arch):
    b = bundles[arch]
    ids = _valid_ids(b)
    ids[1][ids[1] == b.config.text.eot_token_id] = 320
    with pytest.raises(ValueError, match=r"1 token rows have no EOT token \(49407\); first "
                                         r"such row: 1"):
        b.encode_text(ids)


def test_siglip_short_ids_with_explicit_pool_index_raise(bundles):
    b = bundles["siglip-tiny"]
    ids = _valid_ids(b)[:, :11]
    with pytest.raises(ValueError, match="encodes the whole context of 16 positions, but the "
                                         "ids have 11; tokenize with the model's tokenizer"):
        b.encode_text(ids, np.array([10, 10]))


# --- passing cases: the right value -----------------------------------------------------
@pytest.mark.parametrize("arch", FAMILIES)
def test_valid_max_id_and_pool_at_last_position(bundles, arch):
    """The largest id (vocab - 1; 49407 = EOT for CLIP) and the pool index L - 1 are valid and
    give the independent path's feature."""
    b = bundles[arch]
    t = b.config.text
    ids = _valid_ids(b)
    ids[0, 1:] = t.vocab_size - 1  # CLIP: SOT then EOT everywhere (first EOT at 1)
    pool = np.array([t.context_length - 1, t.context_length - 1])
    got = b.encode_text(ids, pool)
    np.testing.assert_allclose(got, _reference_feature(b, ids, pool), rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all()
    # Default pooling (first EOT / SigLIP's last position) also agrees.
    default = (np.full(2, t.context_length - 1) if b.config.family == "siglip"
               else np.argmax(ids == t.eot_token_id, axis=1))
    np.testing.assert_allclose(b.encode_text(ids), _reference_feature(b, ids, default),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", FAMILIES)
def test_integral_float_and_int64_ids_accepted(bundles, arch):
    b = bundles[arch]
    ids = _valid_ids(b)
    want = b.encode_text(ids)
    np.testing.assert_allclose(b.encode_text(ids.astype(np.float64)), want, rtol=0, atol=0)
    np.testing.assert_allclose(b.encode_text(ids.astype(np.int64)), want, rtol=0, atol=0)


def test_siglip_short_ids_padded_as_the_tokenizer_pads(bundles):
    """11 of 16 positions (with or without the EOS): the feature of the tokenizer's padded
    row, to 1e-6 (before: pooled at position 10, a different feature)."""
    b = bundles["siglip-tiny"]
    tok = b.tokenizer
    full = b.tokenize(["a dog sitting on a bench in the rain"])
    pieces = tok.encode("a dog sitting on a bench in the rain")
    assert len(pieces) >= 11
    no_eos = np.asarray([pieces[:11]], np.int32)
    with_eos = np.asarray([pieces[:10] + [tok.eot_token_id]], np.int32)
    np.testing.assert_array_equal(tok._finish(pieces[:11]), np.r_[pieces[:11],
                                  [tok.pad_token_id] * 5])
    want = b.encode_text(tok([tok.sp.decode(pieces[:11])]))
    np.testing.assert_allclose(b.encode_text(no_eos), want, rtol=0, atol=1e-6)
    want10 = b.encode_text(np.asarray([tok._finish(pieces[:10])]))
    np.testing.assert_allclose(b.encode_text(with_eos), want10, rtol=0, atol=1e-6)
    assert full.shape == (1, 16)


@pytest.mark.parametrize("arch", FAMILIES)
def test_tokenize_empty_list(bundles, arch):
    b = bundles[arch]
    ids = b.tokenize([])
    ctx = b.config.text.context_length
    assert ids.shape == (0, ctx) and ids.dtype == np.int32
    out = b.encode_text(ids)
    assert out.shape == (0, b.config.embed_dim) and out.dtype == np.float32


@pytest.mark.parametrize("arch", FAMILIES)
def test_raw_jitted_functions_fill_nan_out_of_range(bundles, arch):
    """Documented behaviour of the raw pure functions (no host check): an id outside the
    vocabulary or a pool index outside the sequence gives NaN, never another row's value;
    in-range inputs give the independent path's finite feature."""
    b = bundles[arch]
    fam, t = family_of(b.config), b.config.text
    ids = _valid_ids(b)
    pool = np.full(2, t.context_length - 1, np.int32)
    ok = np.asarray(fam.encode_text(b.params, ids, pool, config=b.config))
    np.testing.assert_allclose(ok, _reference_feature(b, ids, pool), rtol=1e-5, atol=1e-6)
    for bad_id in (-1, t.vocab_size, 60000):
        bad = ids.copy()
        bad[0, 2] = bad_id
        out = np.asarray(fam.encode_text(b.params, bad, pool, config=b.config))
        emb = np.asarray(fam.embed_tokens(b.params, bad, config=b.config))
        assert np.isnan(emb[0, 2]).all() and np.isfinite(np.delete(emb[0], 2, axis=0)).all()
        assert np.isnan(out[0]).all()  # the pooled position L - 1 attends to position 2
        np.testing.assert_allclose(out[1], ok[1], rtol=1e-6, atol=1e-7)
    for bad_pool in (-1, t.context_length):
        out = np.asarray(fam.encode_text(b.params, ids, np.array([bad_pool, pool[1]]),
                                         config=b.config))
        assert np.isnan(out[0]).all()
        np.testing.assert_allclose(out[1], ok[1], rtol=1e-6, atol=1e-7)


# --- tokenizer equality with OpenAI's simple_tokenizer (items 6, 7) ----------------------
TOKENIZER_CASES = [
    "a.<|endoftext|> b",  # after punctuation: plain text in the reference
    "look!<|startoftext|> here",
    "cat😀<|endoftext|> dog",  # after an emoji
    "a <|endoftext|> b",  # a word of its own: the special token, as in the reference
    "x<|startoftext|>y",
    "\u0130\u0327",  # İ + combining cedilla: no second normalisation after lower-casing
    "\u0130\u0327stanbul \u0130\u0301\u0327",
]


@pytest.mark.parametrize("text", TOKENIZER_CASES)
def test_tokenizer_special_literals_and_marks_match_reference(openai_tokenizer_module, text):
    from crossgap_jax.models.clip.tokenizer import get_tokenizer

    ref = openai_tokenizer_module.SimpleTokenizer()
    ours = get_tokenizer()
    want = [49406, *ref.encode(text), 49407]
    got = ours([text])[0]
    assert got[: len(want)].tolist() == want and not got[len(want):].any()


# --- images deeper than 8 bits (item 8) ---------------------------------------------------
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _expected_16(values: np.ndarray) -> np.ndarray:
    """Pure-Python ``round(v * 255 / 65535)`` (no ties exist: 65535 / 255 = 257 is odd)."""
    return np.array([[round(int(v) * 255 / 65535) for v in row] for row in values], np.uint8)


@pytest.fixture
def grey16() -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.integers(0, 65536, size=(24, 20), dtype=np.uint16)
    v[0, :4] = [0, 65535, 128, 32896]  # extremes and the 0.5-grey-level boundary region
    return v


def test_16bit_png_scaled_by_bit_depth(tmp_path, grey16):
    path = tmp_path / "grey16.png"
    path.write_bytes(_png(Image.fromarray(grey16)))
    with Image.open(path) as im:
        assert im.mode == "I;16"
    rgb = load_image(path)
    got = np.asarray(rgb)
    want = _expected_16(grey16)
    np.testing.assert_array_equal(got, np.repeat(want[..., None], 3, axis=2))
    assert rgb.info[RESCALED_FROM] == "I;16"
    assert (want == 255).mean() < 0.01  # PIL's clamp would make ~99.6 % white


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_16bit_modes_scaled(grey16, mode):
    if mode == "I;16B":
        img = Image.frombytes("I;16B", grey16.shape[::-1], grey16.astype(">u2").tobytes())
    else:
        img = Image.fromarray(grey16.astype(np.int32))
    assert img.mode == mode
    np.testing.assert_array_equal(np.asarray(to_rgb(img))[..., 0], _expected_16(grey16))


def test_float_image_scaled_from_unit_range():
    k = np.arange(0, 513, dtype=np.float64).reshape(27, 19)  # dyadic values k / 512
    v = (k / 512).astype(np.float32)
    img = Image.fromarray(v)
    assert img.mode == "F"
    want = np.array([[round(float(x) * 255) for x in row] for row in v], np.uint8)
    np.testing.assert_array_equal(np.asarray(to_rgb(img))[..., 1], want)
    bad = Image.fromarray(np.float32([[0.0, 2.5]]))
    with pytest.raises(ValueError, match=r"mode F.*\[0, 2.5\].*expected \[0, 1\]"):
        to_rgb(bad)
    with pytest.raises(ValueError, match=r"mode I.*expected the 16-bit range"):
        to_rgb(Image.fromarray(np.int32([[0, 70000]])))


def test_preprocess_of_16bit_equals_preprocess_of_its_8bit_version(grey16):
    img16 = Image.fromarray(np.repeat(np.repeat(grey16, 2, 0), 2, 1))
    img8 = Image.fromarray(_expected_16(np.asarray(img16)), "L")
    np.testing.assert_array_equal(preprocess_image(img16, 16), preprocess_image(img8, 16))


def _mixed_split(tmp_path, grey16):
    """Two 16-bit PNGs and the 8-bit version of the first."""
    from crossgap_jax.data.types import ImageSplit

    paths = []
    for name, img in [("a16.png", Image.fromarray(grey16)),
                      ("b8.png", Image.fromarray(_expected_16(grey16), "L")),
                      ("c16.png", Image.fromarray(grey16[::-1].copy()))]:
        p = tmp_path / name
        p.write_bytes(_png(img))
        paths.append(str(p))
    return ImageSplit(name="t", split="test", items=["a16", "b8", "c16"], paths=paths,
                      labels=np.array([0, 1, 0]), root=str(tmp_path))


def test_pipeline_counts_rescaled_images(tmp_path, grey16):
    from crossgap_jax.data.loader import ImageBatchLoader

    split = _mixed_split(tmp_path, grey16)
    loader = ImageBatchLoader(split, batch_size=2, image_size=16, num_threads=1)
    batches = list(loader)
    rep = loader.report()
    assert rep["rescaled"] == 2 and rep["rescaled_names"] == ["a16", "c16"]
    assert rep["skipped"] == 0
    # a16 and b8 (its 8-bit version) give the same pixels.
    np.testing.assert_array_equal(batches[0].images[0], batches[0].images[1])


def test_feature_set_reports_rescaled_images(tmp_path, grey16, bundles):
    """encode_split names the rescaled files in the FeatureSet, the feature file keeps them,
    and an older file without the field loads with none."""
    from crossgap_jax.pipeline.features import encode_split
    from crossgap_jax.pipeline.store import FeatureSet, load_features, save_features

    b = bundles["tiny"]
    fs = encode_split(b, _mixed_split(tmp_path, grey16), batch_size=2, progress=False)
    assert fs.rescaled == {"a16": "I;16", "c16": "I;16"} and fs.skipped == {}
    np.testing.assert_allclose(fs.features[0], fs.features[1], rtol=1e-6, atol=1e-7)  # a16 = b8
    path = str(tmp_path / "f.npz")
    save_features(path, fs)
    assert load_features(path).rescaled == fs.rescaled
    old = FeatureSet(["x"], np.zeros((1, 2), np.float32), {})
    save_features(path, old)
    with np.load(path) as z:
        legacy = {k: z[k] for k in z.files if k != "rescaled"}
    np.savez(path, **legacy)
    assert load_features(path).rescaled == {}
