"""SigLIP's SentencePiece tokenizer (the user's ``spiece.model``), as the paper's authors ran it.

The authors tokenised SigLIP text with open_clip's ``HFTokenizer(clean="canonicalize")``;
this class reproduces it id for id:

1. clean the text as open_clip's ``_clean_canonicalize`` (:func:`canonicalize_text`):
   ``ftfy.fix_text``, HTML-unescape twice, strip; then ``_`` -> space, remove every ASCII
   punctuation character (``string.punctuation``; ``£`` is not ASCII and stays),
   lower-case, collapse whitespace runs to one space;
2. SentencePiece-encode it (with the model's dummy ``▁`` prefix);
3. keep at most ``context_length - 1`` pieces and append EOS (``</s>``);
4. pad to ``context_length`` with the pad id, which is the EOS id (HF ``pad_token="</s>"``).

The model was trained on max-length padded text and pools the **last** position, so
texts are always padded to the full context (64 for SigLIP B/16).

Steps 2-4 are what transformers' ``SiglipTokenizer`` (and big_vision's ``tokenize(...,
eos="sticky", pad_value=1)``) do too; its cleaning (step 1) differs only on text that the
ftfy / HTML steps change or that contains ``_`` (transformers removes it, joining the two
words; open_clip makes it a space).

OTI templates: :meth:`SigLIPTokenizer.template_ids` places one token per ``£``
placeholder. With a vocabulary that has the piece ``▁£`` (a space-prefixed pound sign)
that is what ordinary tokenisation gives (checked in the tests); with one that only has
``£`` (ordinary tokenisation gives ``▁`` then ``£``), the template is built by
tokenising the text between placeholders and inserting the ``£`` piece for each
placeholder, so that the R pseudo tokens are R consecutive positions. A vocabulary
without either piece (``£`` would be ``<unk>``) is refused.
"""

from __future__ import annotations

import functools
import html
import os
import string
from collections.abc import Sequence

import ftfy
import numpy as np
import sentencepiece as spm

from crossgap_jax.models.clip.tokenizer import text_list

_PUNCT = str.maketrans("", "", string.punctuation)
_SPIECE_FILES = ("spiece.model", "tokenizer.model", "sentencepiece.model")


def basic_clean(text: str) -> str:
    """open_clip's ``basic_clean``: ``ftfy.fix_text``, HTML-unescape twice, strip."""

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def canonicalize_text(text: str, lowercase: bool = True) -> str:
    """The SigLIP text cleaning the authors used (open_clip's ``_clean_canonicalize``).

    :func:`basic_clean` (ftfy fix, HTML-unescape twice, strip), then ``_`` -> space,
    every ``string.punctuation`` character removed, lower-case (unless ``lowercase`` is
    False), whitespace runs collapsed to one space, stripped. E.g. ``"Caf\u00c3\u00a9_au
    &amp;amp; lait!"`` -> ``"café au lait"``.
    """
    text = basic_clean(text).replace("_", " ").translate(_PUNCT)
    if lowercase:
        text = text.lower()
    return " ".join(text.split())


class LastPositionTokenizer:
    """What the tokenizers of SigLIP's non-causal, last-position-pooled text tower share:
    pieces cut to ``context_length - 1``, the EOS id appended, ``pad_token_id`` padding to
    the full context; the pooled position is always ``L - 1``. A subclass sets
    ``context_length``, ``eot_token_id``, ``pad_token_id`` and provides ``encode_batch``
    (ids without EOS, one list per text)."""

    context_length: int
    eot_token_id: int
    pad_token_id: int

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def _finish(self, ids: Sequence[int]) -> np.ndarray:
        row = np.full((self.context_length,), self.pad_token_id, np.int32)
        ids = list(ids)[: self.context_length - 1] + [self.eot_token_id]
        row[: len(ids)] = ids
        return row

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> ``(N, context_length)`` int32 ids: pieces, EOS, pad-id padding.

        Raises:
            TypeError: an item that is not a string.
        """
        texts = text_list(texts)
        out = np.full((len(texts), self.context_length), self.pad_token_id, np.int32)
        for i, ids in enumerate(self.encode_batch(texts)):
            out[i] = self._finish(ids)
        return out

    def pool_indices(self, ids: np.ndarray) -> np.ndarray:
        """``(N, L)`` -> ``(N,)``: the last position, ``L - 1``."""
        ids = np.asarray(ids)
        return np.full((ids.shape[0],), ids.shape[-1] - 1, np.int32)

    eot_indices = pool_indices

    def _template(self, ids: list[int], pid: int, text: str
                  ) -> tuple[np.ndarray, list[int], int]:
        """``template_ids``' result from a template's ids (placeholders as ``pid``).

        Raises:
            ValueError: the template does not fit the context with its EOS.
        """
        if len(ids) + 1 > self.context_length:
            raise ValueError(f"template does not fit the context ({len(ids) + 1} > "
                             f"{self.context_length} tokens): {text!r}")
        positions = [i for i, t in enumerate(ids) if t == pid]
        return self._finish(ids), positions, self.context_length - 1


class SigLIPTokenizer(LastPositionTokenizer):
    """SentencePiece tokenizer producing fixed-length ``int32`` id arrays.

    Args:
        model_file: path of the SentencePiece model (``spiece.model``).
        context_length: output length (64 for SigLIP B/16).
        lowercase: lower-case before encoding (transformers' ``do_lower_case=True``).

    Attributes:
        eot_token_id: the EOS id (``</s>``), also the pad id.
        pad_token_id: the pad id.
        context_length: output length.
    """

    def __init__(self, model_file: str, context_length: int = 64, lowercase: bool = True):
        if not os.path.isfile(model_file):
            raise FileNotFoundError(f"SentencePiece model not found: {model_file}")
        self.model_file = model_file
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        self.context_length = context_length
        self.lowercase = lowercase
        eos = self.sp.piece_to_id("</s>")
        if eos == self.sp.unk_id() or self.sp.id_to_piece(eos) != "</s>":
            raise ValueError(f"{model_file}: the SentencePiece model has no '</s>' piece")
        self.eot_token_id = int(eos)
        self.pad_token_id = int(eos)
        self.unk_token_id = int(self.sp.unk_id())
        self.vocab_size = int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        """SentencePiece ids of one text (canonicalised), without EOS."""
        return list(self.sp.encode(canonicalize_text(text, self.lowercase)))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self.sp.encode([canonicalize_text(t, self.lowercase)
                                                 for t in texts])]

    def placeholder_id(self, placeholder: str) -> int:
        """The single piece that stands for ``placeholder`` (``▁£`` if the vocabulary has it,
        else ``£``).

        Raises:
            ValueError: the placeholder is not a piece of the vocabulary.
        """
        canon = canonicalize_text(placeholder, self.lowercase)
        for piece in ("\u2581" + canon, canon):
            pid = self.sp.piece_to_id(piece)
            if pid != self.unk_token_id and self.sp.id_to_piece(pid) == piece:
                return int(pid)
        raise ValueError(f"placeholder {placeholder!r} is not a piece of {self.model_file} "
                         f"(neither '\u2581{canon}' nor '{canon}')")

    def template_ids(self, text: str, placeholder: str) -> tuple[np.ndarray, list[int], int]:
        """Tokenise an OTI template with one token per ``placeholder``.

        Args:
            text: the formatted template (e.g. ``"a photo of  £ "``).
            placeholder: the placeholder string (``"£"``).

        Returns:
            ``(ids (context_length,), placeholder positions, pool index)``.

        Raises:
            ValueError: the template does not fit the context with its EOS.
        """
        pid = self.placeholder_id(placeholder)
        parts = text.split(placeholder)
        ids: list[int] = []
        for i, part in enumerate(parts):
            ids += self.encode(part) if canonicalize_text(part, self.lowercase) else []
            if i < len(parts) - 1:
                ids.append(pid)
        return self._template(ids, pid, text)


@functools.lru_cache(maxsize=8)
def _cached(path: str, context_length: int) -> SigLIPTokenizer:
    return SigLIPTokenizer(path, context_length)


def load_siglip_tokenizer(path: str, context_length: int = 64) -> SigLIPTokenizer:
    """A cached :class:`SigLIPTokenizer` from an ``spiece.model`` file or a directory with one."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        found = [os.path.join(path, f) for f in _SPIECE_FILES
                 if os.path.isfile(os.path.join(path, f))]
        if not found:
            raise FileNotFoundError(f"no SentencePiece model ({', '.join(_SPIECE_FILES)}) in "
                                    f"{path}")
        path = found[0]
    return _cached(path, context_length)
