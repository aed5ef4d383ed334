"""Tokenizer ids equal OpenAI's reference ``simple_tokenizer`` (loaded by file path).

The reference's ``clip.tokenize`` (its package ``clip.py``) is reproduced here for the
fixed-length layout: ``[SOT] + encode(text) + [EOT]``, zero padded to 77, and with
``truncate=True`` cut to 77 tokens with the last one set to EOT.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from crossgap_jax.models.clip.tokenizer import CLIPTokenizer, eot_indices, get_tokenizer
from crossgap_jax.models.configs import CONTEXT_LENGTH, EOT_TOKEN_ID, SOT_TOKEN_ID

HARD_CASES = [
    "a photo of  £ ",  # the OTI template (R = 1)
    "a photo of  £  £  £ ",  # R = 3
    "",
    "   ",
    "\t\n a \u00a0 photo\r\nof\u2003a   cat \t",  # odd whitespace, NBSP, em space
    "Café crème brûlée — naïve façade, Ελληνικά, русский, 日本語のテキスト, 한국어",
    "emoji 😀🐈‍⬛👍🏽 and symbols ©®™ ± ∞ ≠",
    "Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp; &eacute;",
    "ALL CAPS Title Case MiXeD",
    "don't won't it's we'll they're I'm you've I'd",
    "numbers 1234567890 3.14159 1,000,000 2nd 21st",
    "mojibake: cafÃ© â€œquotesâ€\x9d",
    "punctuation!!! ??? ... ;;; --- ((())) [[]] {{}}",
    "a" * 300,  # one very long word
    "url https://example.com/a?b=c&d=e#f and email someone@example.org",
    "<|startoftext|> literal special tokens <|endoftext|>",
]


def reference_tokenize(tokenizer, texts, context_length=CONTEXT_LENGTH, truncate=True):
    """OpenAI ``clip.tokenize`` semantics on top of the reference ``SimpleTokenizer``."""
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    for i, text in enumerate(texts):
        tokens = [sot, *tokenizer.encode(text), eot]
        if len(tokens) > context_length:
            if not truncate:
                raise RuntimeError("too long")
            tokens = tokens[:context_length]
            tokens[-1] = eot
        out[i, : len(tokens)] = tokens
    return out


@pytest.fixture(scope="module")
def reference(openai_tokenizer_module):
    return openai_tokenizer_module.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours():
    return get_tokenizer()


def test_paper_template_ids(ours):
    ids = ours("a photo of  £ ")
    assert ids.shape == (1, 77) and ids.dtype == np.int32
    assert ids[0, :6].tolist() == [49406, 320, 1125, 539, 1950, 49407]
    assert (ids[0, 6:] == 0).all()
    assert eot_indices(ids).tolist() == [5]


@pytest.mark.parametrize("text", HARD_CASES, ids=range(len(HARD_CASES)))
def test_hard_cases_match_reference(ours, reference, text):
    np.testing.assert_array_equal(ours([text]), reference_tokenize(reference, [text]))


def test_empty_text_is_sot_eot(ours):
    ids = ours([""])
    assert ids[0, :2].tolist() == [SOT_TOKEN_ID, EOT_TOKEN_ID] and (ids[0, 2:] == 0).all()
    assert eot_indices(ids).tolist() == [1]


def test_overlong_text_truncation_keeps_eot_last(ours, reference):
    text = " ".join(f"word{i}" for i in range(200))
    ids = ours([text])
    np.testing.assert_array_equal(ids, reference_tokenize(reference, [text]))
    assert ids[0, -1] == EOT_TOKEN_ID and ids[0, 0] == SOT_TOKEN_ID
    assert (ids[0, 1:-1] != EOT_TOKEN_ID).all() and (ids[0] != 0).all()
    assert eot_indices(ids).tolist() == [76]
    # Exactly at the boundary: 75 BPE tokens + SOT + EOT = 77 is kept whole.
    exact = " ".join(["cat"] * 75)
    np.testing.assert_array_equal(ours([exact]), reference_tokenize(reference, [exact]))
    strict = CLIPTokenizer(truncate=False)
    strict([exact])  # fits
    with pytest.raises(ValueError, match="more than the context length"):
        strict([exact + " cat"])


def test_batch_equals_one_by_one_and_types(ours):
    texts = ["a dog", "", "a much longer caption about a cat on a mat"]
    batch = ours(texts)
    for i, t in enumerate(texts):
        np.testing.assert_array_equal(batch[i], ours(t)[0])
    with pytest.raises(TypeError):
        ours(["ok", None])


def test_eot_indices_errors():
    ids = np.zeros((2, 77), np.int32)
    ids[0, :2] = [SOT_TOKEN_ID, EOT_TOKEN_ID]
    with pytest.raises(ValueError, match="no EOT"):
        eot_indices(ids)
    ids[1, :4] = [SOT_TOKEN_ID, 320, EOT_TOKEN_ID, EOT_TOKEN_ID]  # first EOT counts
    assert eot_indices(ids).tolist() == [1, 2]


@pytest.mark.slow
def test_all_coco_captions_match_reference(ours, reference, shared_data):
    path = shared_data / "coco_karpathy" / "test5k_captions.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 25_000
    t0 = time.perf_counter()
    got = ours(lines)
    t1 = time.perf_counter()
    want = reference_tokenize(reference, lines)
    t2 = time.perf_counter()
    print(f"\n[tokenizer] {len(lines)} COCO captions: ours {t1 - t0:.1f}s, "
          f"reference simple_tokenizer {t2 - t1:.1f}s")
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} captions differ, first: {lines[bad[0]]!r}"


# --- seeded fuzz: mixed scripts, emoji, combining marks, entities, whitespace, specials -----
_FUZZ_POOLS = {
    "latin": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéèêëàâäçñöüßøåæœÉÀÇÑÖÜİıſ",
    "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЭЮЯіїєґ",
    "greek": "αβγδεζηθικλμνξοπρσςτυφχψωΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩάέήίόύώϊϋΐΰ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年日本語中文字漢字",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهوي\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652ء",
    "devanagari": "अआइईउऊएऐओऔकखगघङचछजझञटठडढणतथदधनपफबभमयरलवशषसह"
                  "\u093e\u093f\u0940\u0941\u0942\u0947\u0948\u094b\u094c\u094d\u0902\u0903",
    "digits": "0123456789٠١٢٣٤٥٦٧٨٩०१२३४५६७८९½²³",
    "punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~¡¿«»“”‘’—–…·•§¶©®™°±×÷£€¥",
    "marks": "".join(chr(c) for c in range(0x0300, 0x0370)) + "\u0327\u0328\u20dd\u20e3",
}
_EMOJI = ["😀", "🐈", "👍", "🏽", "👍🏽", "🐈\u200d⬛", "👨\u200d👩\u200d👧\u200d👦",
          "🏳️\u200d🌈", "❤️", "🇫🇷", "👩🏿\u200d💻", "✋🏻", "1️⃣", "\u200d", "\ufe0f"]
_ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&eacute;", "&nbsp;", "&#x1F600;",
             "&#8212;", "&amp;amp;", "&amp;lt;", "&copy;", "&hellip;", "&", "&#", "&;"]
_SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u2003", "\u3000", " \t\u00a0\n ",
           "\u200b", "\u2028"]
_SPECIALS = ["<|endoftext|>", "<|startoftext|>", "<|ENDOFTEXT|>", "<|StartOfText|>",
             "<|endoftext", "|>", "<|", "<|ſtartoftext|>"]
_CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "’s", "''"]


def _fuzz_piece(rng) -> str:
    r = rng.random()
    if r < 0.45:
        pool = _FUZZ_POOLS[rng.choice(list(_FUZZ_POOLS))]
        return "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
    if r < 0.55:
        return rng.choice(_EMOJI)
    if r < 0.63:
        return rng.choice(_ENTITIES)
    if r < 0.80:
        return rng.choice(_SPACES)
    if r < 0.90:
        return rng.choice(_SPECIALS)
    if r < 0.95:
        return rng.choice(_CONTRACTIONS)
    return rng.choice(["İ", "I", "Σ", "ẞ", "ǅ"]) + rng.choice(_FUZZ_POOLS["marks"])


def fuzz_strings(n: int, seed: int = 0) -> list[str]:
    """``n`` seeded random strings; ~2 % are long enough to be truncated to 77 tokens."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(60, 120) if rng.random() < 0.02 else rng.randint(0, 12)
        out.append("".join(_fuzz_piece(rng) for _ in range(k)))
    return out


def test_fuzz_matches_reference(ours, reference):
    """10,000 seeded strings: identical ids to OpenAI's tokenizer (SOT/EOT, truncation)."""
    texts = fuzz_strings(10_000, seed=12)
    got = ours(texts)
    want = reference_tokenize(reference, texts)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} strings differ, first: {texts[bad[0]]!r}"
    # The set exercises what it claims to: specials kept as special, truncation happens.
    assert (want[:, 1:] == SOT_TOKEN_ID).any() and (want[:, -1] == EOT_TOKEN_ID).sum() >= 20
