"""The CLIP BPE tokenizer: OpenAI's text cleaning and word split in Python, the BPE merges
in the Rust ``tokenizers`` backend.

The vocabulary and merges are derived from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``
(shipped as package data, MIT licensed). Every step before the BPE follows OpenAI's
reference ``simple_tokenizer`` exactly, so that the ids equal its ids:

1. clean: ``ftfy.fix_text`` (which applies NFC once), HTML unescaping twice, whitespace
   runs to one space, strip, Python ``str.lower()``; no second unicode normalisation
   (transformers' CLIP normaliser applies NFC again *after* lower-casing, which reorders
   combining marks after capitals such as ``İ``);
2. split into words with the reference's pattern and flags (``regex`` module,
   ``IGNORECASE``): a word that is exactly ``<|startoftext|>`` / ``<|endoftext|>`` is that
   special token, as in the reference; a literal elsewhere (e.g. right after punctuation,
   where the punctuation run swallows its ``<|``) is plain text. (transformers' tokenizer
   splits special-token literals out of any position, which differs.)
3. byte-level BPE of each word with the ``</w>`` end-of-word suffix (Rust, batched).

The equality claim is exactly what ``tests/models/test_tokenizer.py`` proves: the COCO test
captions and a seeded fuzz set of 10,000 mixed-script strings give identical ids.
"""

from __future__ import annotations

import functools
import gzip
import html
import os
from collections.abc import Sequence

import ftfy
import numpy as np
import regex
from tokenizers import Tokenizer, models, pre_tokenizers

from crossgap_jax.models.configs import CONTEXT_LENGTH, EOT_TOKEN_ID, SOT_TOKEN_ID

BPE_PATH = os.path.join(os.path.dirname(__file__), "assets", "bpe_simple_vocab_16e6.txt.gz")
# Number of merges OpenAI uses from the file: 49152 - 256 - 2.
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map (a fact of the vocabulary format)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


@functools.cache
def load_vocab_and_merges(bpe_path: str = BPE_PATH) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (token -> id) and merge list from the OpenAI BPE file."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    byte_symbols = list(_bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert vocab["<|startoftext|>"] == SOT_TOKEN_ID and vocab["<|endoftext|>"] == EOT_TOKEN_ID
    return vocab, merges


_WS = regex.compile(r"\s+")
# OpenAI's word pattern and flags (simple_tokenizer.py); applied after lower-casing.
_WORD = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+""", regex.IGNORECASE)
_SPECIAL_WORDS = {"<|startoftext|>": SOT_TOKEN_ID, "<|endoftext|>": EOT_TOKEN_ID}


def clean_text(text: str) -> str:
    """OpenAI CLIP's text normalisation: ftfy, HTML unescape (twice), whitespace, lower case."""

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WS.sub(" ", text).strip().lower()


class CLIPTokenizer:
    """CLIP tokenizer producing fixed-length ``int32`` id arrays.

    Args:
        context_length: output length (77 for every CLIP model here).
        truncate: when True, texts longer than the context are cut and the last position
            is set to EOT (as OpenAI's ``clip.tokenize(..., truncate=True)``, which the
            paper's code uses); when False such a text raises ``ValueError``.
    """

    def __init__(self, context_length: int = CONTEXT_LENGTH, truncate: bool = True,
                 bpe_path: str = BPE_PATH):
        vocab, merges = load_vocab_and_merges(bpe_path)
        # Pure BPE over pre-split words: no normaliser, byte-level mapping without a regex.
        self._bpe = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges),
                                         end_of_word_suffix="</w>"))
        self._bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                           use_regex=False)
        self.context_length = context_length
        self.truncate = truncate
        self.sot_token_id = SOT_TOKEN_ID
        self.eot_token_id = EOT_TOKEN_ID
        self.vocab_size = len(vocab)

    def encode(self, text: str) -> list[int]:
        """BPE ids of one text, without SOT/EOT."""
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE ids of several texts, without SOT/EOT (batched in the Rust backend).

        A word that is exactly a special-token literal becomes that token (as in OpenAI's
        ``simple_tokenizer``); see the module docstring.
        """
        words = [_WORD.findall(clean_text(t)) for t in texts]
        if not words:
            return []
        encodings = self._bpe.encode_batch(words, is_pretokenized=True,
                                           add_special_tokens=False)
        out = []
        for ws, enc in zip(words, encodings):
            if not any(w in _SPECIAL_WORDS for w in ws):
                out.append(list(enc.ids))
                continue
            ids: list[int] = []
            previous = None
            for tok, w in zip(enc.ids, enc.word_ids):
                special = _SPECIAL_WORDS.get(ws[w])
                if special is None:
                    ids.append(tok)
                elif w != previous:  # one special id for all the word's BPE pieces
                    ids.append(special)
                previous = w
            out.append(ids)
        return out

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> ``(N, context_length)`` int32 ids: SOT, BPE ids, EOT, zero padding."""
        texts = text_list(texts)
        result = np.zeros((len(texts), self.context_length), dtype=np.int32)
        for i, ids in enumerate(self.encode_batch(texts)):
            tokens = [self.sot_token_id, *ids, self.eot_token_id]
            if len(tokens) > self.context_length:
                if not self.truncate:
                    raise ValueError(
                        f"text {i} has {len(tokens)} tokens, more than the context length "
                        f"{self.context_length}: {texts[i][:80]!r}..."
                    )
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot_token_id
            result[i, : len(tokens)] = tokens
        return result

    def eot_indices(self, ids: np.ndarray) -> np.ndarray:
        """Position of the first EOT token in each row of ``ids`` ``(N, L)`` -> ``(N,)``."""
        return eot_indices(ids, self.eot_token_id)


def text_list(texts: str | Sequence[str]) -> list[str]:
    """A tokenizer's input as a list of strings (one string: a list of one).

    Raises:
        TypeError: an item that is not a string (named).
    """
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"tokenizer expects strings, got {type(t).__name__}: {t!r}")
    return texts


def eot_indices(ids, eot_token_id: int = EOT_TOKEN_ID) -> np.ndarray:
    """Position of the first ``eot_token_id`` in each row of ``ids`` ``(N, L)`` -> ``(N,)``.

    Raises:
        ValueError: a row holds no EOT token (a truncated or malformed id array).
    """
    ids = np.asarray(ids)
    is_eot = ids == eot_token_id
    missing = ~is_eot.any(axis=-1)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} token rows have no EOT token ({eot_token_id}); "
            f"first such row: {int(np.argmax(missing))}"
        )
    return np.argmax(is_eot, axis=-1).astype(np.int32)


@functools.lru_cache(maxsize=4)
def get_tokenizer(context_length: int = CONTEXT_LENGTH) -> CLIPTokenizer:
    """A cached shared tokenizer instance."""
    return CLIPTokenizer(context_length=context_length)
