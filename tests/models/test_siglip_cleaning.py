"""SigLIP text cleaning as the authors ran it (open_clip's ``clean="canonicalize"``).

Expected strings are derived by hand from the rule (PAPER.md): ``ftfy.fix_text``,
HTML-unescape twice, strip; ``_`` -> space; every ``string.punctuation`` character
removed; lower-case; whitespace runs collapsed. When open_clip's ``tokenizer.py`` is
importable (``pip install open_clip_torch``), it is compared too.
"""

from __future__ import annotations

import importlib.util
import pathlib
import random

import pytest
from support import family_factories as F

from crossgap_jax.models.siglip.tokenizer import SigLIPTokenizer, canonicalize_text

CASES = [
    # underscores become spaces (transformers' SiglipTokenizer would join the words)
    ("a_photo_of_a_dog", "a photo of a dog"),
    ("hot__dog", "hot dog"),
    ("_leading and trailing_", "leading and trailing"),
    # HTML entities, double-escaped: &amp;amp; -> &amp; -> & -> removed
    ("Tom &amp;amp; Jerry", "tom jerry"),
    ("a < b &amp;amp; c", "a b c"),  # a '<' stops ftfy's own unescaping: html.unescape x2
    ("&lt;b&gt;Bold&lt;/b&gt; text", "bboldb text"),
    ("fish &amp;amp;amp; chips", "fish chips"),
    ("caf&eacute; &#233;t&#xe9;", "café été"),
    # mojibake (UTF-8 read as cp1252) fixed by ftfy; curly quotes uncurled then removed
    ("cafÃ©", "café"),
    ("Ã©tÃ© in Paris", "été in paris"),
    ("don\u2019t stop", "dont stop"),
    # full-width letters (ftfy fixes the width)
    ("\uff21\uff22\uff23 Test", "abc test"),
    # punctuation and whitespace runs
    ("  Hello,\t\tWORLD!!\n\n  (foo)  ", "hello world foo"),
    ("x\u00a0\u00a0y", "x y"),
    ("price: £5.99 [approx.]", "price £599 approx"),
    ("!!!...", ""),
    ("", ""),
]


@pytest.mark.parametrize("text, want", CASES)
def test_canonicalize_by_hand(text, want):
    assert canonicalize_text(text) == want


def test_canonicalize_keeps_case_when_asked():
    assert canonicalize_text("Hello_World &amp;amp; Co.", lowercase=False) == "Hello World Co"


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    pytest.importorskip("sentencepiece")
    return SigLIPTokenizer(F.train_spiece(str(tmp_path_factory.mktemp("sp") / "spiece.model")),
                           context_length=16)


def test_tokenizer_ids_follow_the_cleaning(tok):
    texts = [t for t, _ in CASES]
    got = tok(texts)
    want = tok([w for _, w in CASES])  # already clean: cleaning is idempotent on them
    assert (got == want).all()
    assert tok.encode("a_photo_of_a_dog") == tok.sp.encode("a photo of a dog")
    assert tok.encode("a_photo_of_a_dog") != tok.sp.encode("aphotoofadog")


def _open_clip_tokenizer():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip (open_clip_torch) not installed: optional comparison")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    mod_spec = importlib.util.spec_from_file_location("open_clip_tokenizer_by_path", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


def test_matches_open_clip_when_available():
    pytest.importorskip("torch")
    oc = _open_clip_tokenizer()
    rng = random.Random(0)
    pieces = ["a", "B", "_", "__", " ", "\t", "\n", "&amp;", "&amp;amp;", "&lt;", "<", ">",
              "Ã©", "caf", "\u2019", "\u201c", ".", ",", "!", "£", "\u00a0", "\uff21", "é",
              "e\u0301", "photo", "DOG", "-", "'", "&#233;", "ﬁ", "☃", "😀", "ß"]
    texts = [t for t, _ in CASES] + [
        "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    for t in texts:
        assert canonicalize_text(t) == oc._clean_canonicalize(t), repr(t)
