"""SigLIP 2's Gemma tokenizer (the user's ``tokenizer.json`` or ``tokenizer.model``).

SigLIP 2 (fixed resolution) is SigLIP's graph with a 256k Gemma vocabulary; big_vision's
README for it (``big_vision/configs/proj/image_text/README_siglip2.md``) names the vocabulary
size and the tokenizer as the only differences. Its demo colab (``SigLIP2_demo.ipynb``, the
maintainers' usage, with the note that SigLIP 2 works best with lower-case text) tokenises
with ``lower(key="text")|tok(length=64, model="gemma", bos="no", eos="sticky")``
(``big_vision/pp/proj/paligemma/ops.py``). This class produces those ids:

1. clean the text (``clean``): ``"canonicalize"`` (default) is open_clip's
   ``_clean_canonicalize`` (:func:`~crossgap_jax.models.siglip.tokenizer.canonicalize_text`:
   ftfy, HTML-unescape, ``_`` -> space, ASCII punctuation removed, lower-case, whitespace
   collapsed), what open_clip's ``ViT-B-16-SigLIP2`` config (``tokenizer_kwargs:
   {"clean": "canonicalize"}``) and so IsoCLIP's runs apply; ``"lower"`` is big_vision's
   ``lower`` op alone (``tf.strings.lower``: ASCII letters lower-cased, nothing else);
2. Gemma pieces of the cleaned text, **no BOS** and no dummy ``▁`` prefix (the Gemma
   model has none: a leading word has no ``▁``);
3. keep at most ``context_length - 1`` pieces and append ``<eos>`` (``eos="sticky"``: a
   truncated text still ends in ``<eos>``);
4. pad to ``context_length`` with ``<pad>`` (id 0; **not** the EOS id as in SigLIP 1).

The text tower pools the **last** position (index ``L - 1``): for a text shorter than the
context that is a ``<pad>`` token, as in training.

The file's own special-token settings (a ``post_processor`` adding BOS / EOS, padding or
truncation saved in ``tokenizer.json``) are not used: steps 3-4 are done here, so the ids
do not depend on how the file was exported.

OTI templates (:meth:`GemmaTokenizer.template_ids`): one token per ``£`` placeholder, the
piece ``▁£`` if the vocabulary has it (what ordinary tokenisation of ``"... of £"`` gives),
else ``£``; the text after a placeholder is tokenised with its leading space (``▁word``), as
in the whole sentence; EOS follows the last piece, and the pooled position is ``L - 1``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import sentencepiece as spm
from tokenizers import Tokenizer

from crossgap_jax.models.siglip.tokenizer import LastPositionTokenizer, canonicalize_text

CLEAN_MODES = ("canonicalize", "lower")
GEMMA_FILES = ("tokenizer.json", "tokenizer.model")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def clean_text(text: str, mode: str) -> str:
    """``"canonicalize"``: open_clip's canonicalisation; ``"lower"``: ASCII lower-case only
    (big_vision's ``lower`` op). Raises ValueError for another mode."""
    if mode == "canonicalize":
        return canonicalize_text(text)
    if mode == "lower":
        return text.translate(_ASCII_LOWER)
    raise ValueError(f"text cleaning must be one of {CLEAN_MODES}, got {mode!r}")


class _JsonBackend:
    """A Hugging Face ``tokenizers`` file (``tokenizer.json``), special tokens not added."""

    def __init__(self, path: str):
        self.tok = Tokenizer.from_file(path)
        self.tok.no_padding()
        self.tok.no_truncation()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def piece_id(self, piece: str) -> int | None:
        return self.tok.token_to_id(piece)

    def size(self) -> int:
        return int(self.tok.get_vocab_size(with_added_tokens=True))


class _SentencePieceBackend:
    """A SentencePiece model (``tokenizer.model``); ``encode`` adds no BOS / EOS."""

    def __init__(self, path: str):
        self.sp = spm.SentencePieceProcessor(model_file=path)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.sp.encode(texts)]

    def piece_id(self, piece: str) -> int | None:
        pid = self.sp.piece_to_id(piece)
        return int(pid) if self.sp.id_to_piece(pid) == piece else None

    def size(self) -> int:
        return int(self.sp.get_piece_size())


class GemmaTokenizer(LastPositionTokenizer):
    """Gemma-vocabulary tokenizer producing fixed-length ``int32`` ids (SigLIP 2).

    Args:
        path: ``tokenizer.json`` (Hugging Face ``tokenizers``) or a SentencePiece model
            (``tokenizer.model``).
        context_length: output length (64 for SigLIP 2).
        clean: ``"canonicalize"`` or ``"lower"`` (module docstring, step 1).

    Attributes:
        eot_token_id: the ``<eos>`` id (appended after the pieces).
        pad_token_id: the ``<pad>`` id (fills the rest of the context).
        vocab_size, context_length, clean.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the vocabulary has no ``<eos>`` or ``<pad>`` piece, or ``clean`` is
            not a known mode.
    """

    def __init__(self, path: str, context_length: int = 64, clean: str = "canonicalize"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Gemma tokenizer file not found: {path}")
        if clean not in CLEAN_MODES:
            raise ValueError(f"text cleaning must be one of {CLEAN_MODES}, got {clean!r}")
        self.path = path
        self.backend: Any = (_JsonBackend(path) if path.endswith(".json")
                             else _SentencePieceBackend(path))
        self.context_length = context_length
        self.clean = clean
        ids = {p: self.backend.piece_id(p) for p in ("<eos>", "<pad>", "<unk>")}
        missing = [p for p in ("<eos>", "<pad>") if ids[p] is None]
        if missing:
            raise ValueError(f"{path}: not a Gemma vocabulary (no {' / '.join(missing)} "
                             f"token); SigLIP 2 needs its tokenizer.json or tokenizer.model")
        self.eot_token_id = int(ids["<eos>"])
        self.pad_token_id = int(ids["<pad>"])
        self.unk_token_id = ids["<unk>"]
        self.vocab_size = self.backend.size()

    def encode(self, text: str) -> list[int]:
        """Gemma ids of one cleaned text, no BOS / EOS."""
        return self.backend.encode([clean_text(text, self.clean)])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Gemma ids of each cleaned text, no BOS / EOS."""
        return self.backend.encode([clean_text(t, self.clean) for t in texts]) if texts else []

    def placeholder_id(self, placeholder: str) -> int:
        """The one piece for ``placeholder``: ``▁£`` if the vocabulary has it, else ``£``.

        Raises:
            ValueError: neither is a piece of the vocabulary.
        """
        canon = clean_text(placeholder, self.clean).strip()
        for piece in ("\u2581" + canon, canon):
            pid = self.backend.piece_id(piece)
            if pid is not None and pid != self.unk_token_id:
                return int(pid)
        raise ValueError(f"placeholder {placeholder!r} is not a piece of {self.path} "
                         f"(neither '\u2581{canon}' nor '{canon}')")

    def template_ids(self, text: str, placeholder: str) -> tuple[np.ndarray, list[int], int]:
        """Tokenise an OTI template with one token per ``placeholder``.

        Returns:
            ``(ids (context_length,), placeholder positions, pool index L - 1)``.

        Raises:
            ValueError: the template does not fit the context with its ``<eos>``.
        """
        pid = self.placeholder_id(placeholder)
        anchor_text = clean_text(placeholder, self.clean).strip()
        anchor = self.backend.encode([anchor_text])[0]
        parts = text.split(placeholder)
        ids: list[int] = []
        for i, part in enumerate(parts):
            part = clean_text(part, self.clean).strip()
            if part and i == 0:
                ids += self.backend.encode([part])[0]
            elif part:
                # After a placeholder the first word keeps its space ("▁on"), as in the
                # whole sentence: tokenise "£ on ..." and drop the pieces of "£" (pieces
                # never span a space in the Gemma vocabulary).
                full = self.backend.encode([f"{anchor_text} {part}"])[0]
                if full[: len(anchor)] != anchor:
                    raise ValueError(f"cannot place {placeholder!r} before {part!r}: its "
                                     f"pieces merge with the next word in {self.path}")
                ids += full[len(anchor):]
            if i < len(parts) - 1:
                ids.append(pid)
        return self._template(ids, pid, text)


@functools.lru_cache(maxsize=8)
def _cached(path: str, context_length: int, clean: str) -> GemmaTokenizer:
    return GemmaTokenizer(path, context_length, clean)


def find_gemma_file(folder: str) -> str | None:
    """``tokenizer.json`` (preferred) or ``tokenizer.model`` in ``folder``, else None."""
    for name in GEMMA_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def load_gemma_tokenizer(path: str, context_length: int = 64,
                         clean: str = "canonicalize") -> GemmaTokenizer:
    """A cached :class:`GemmaTokenizer` from a file or a directory holding one
    (:data:`GEMMA_FILES`).

    Raises:
        FileNotFoundError: no tokenizer file there.
    """
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(path):
        found = find_gemma_file(path)
        if found is None:
            raise FileNotFoundError(f"no Gemma tokenizer ({', '.join(GEMMA_FILES)}) in {path}")
        path = found
    return _cached(path, context_length, clean)
