"""OTI templates: a sentence with one ``{}`` where the R pseudo word tokens go, tokenized
with R placeholder tokens (``£``) whose positions the inverter replaces (PAPER.md: the
default template is "a photo of {}")."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PLACEHOLDER = "£"
__all__ = ["PLACEHOLDER", "Template", "prepare_template"]


@dataclasses.dataclass(frozen=True)
class Template:
    """A tokenized OTI template.

    Attributes:
        text: the formatted sentence (``template.format(" £ " * R)``).
        ids: ``(context_length,)`` int32 token ids.
        placeholder_index: position of the first of the R placeholder tokens.
        eot_index: position of EOT.
        num_tokens: R.
    """

    text: str
    ids: np.ndarray
    placeholder_index: int
    eot_index: int
    num_tokens: int


def prepare_template(template: str, num_tokens: int, tokenizer: Any) -> Template:
    """Tokenize ``template`` with R placeholders and locate them.

    The placeholder id is whatever the tokenizer produces for ``"£"`` (1950 with the
    OpenAI BPE: the byte-level symbol for UTF-8 C2 A3, not the vocabulary entry ``£</w>``).

    Raises:
        ValueError: the template lacks exactly one ``{}``, the placeholders are not R
            consecutive tokens, or the sentence does not fit the context.
    """
    if template.count("{}") != 1:
        raise ValueError(f"template must contain exactly one '{{}}': {template!r}")
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    if PLACEHOLDER in template:
        raise ValueError(f"template may not contain the placeholder {PLACEHOLDER!r} itself")
    text = template.format(f" {PLACEHOLDER} " * num_tokens)
    # Family hook: a tokenizer with ``template_ids(text, placeholder) -> (ids, positions,
    # pool_index)`` places the placeholders itself (SigLIP's SentencePiece, which pools at
    # the last position rather than at EOT).
    if hasattr(tokenizer, "template_ids"):
        ids, positions, pool = tokenizer.template_ids(text, PLACEHOLDER)
        positions = np.asarray(positions, np.int64)
        first = int(positions[0]) if len(positions) else -1
        if len(positions) != num_tokens or not np.array_equal(
                positions, np.arange(first, first + num_tokens)):
            raise ValueError(f"expected {num_tokens} consecutive placeholder tokens in {text!r}, "
                             f"found them at {positions.tolist()}")
        return Template(text, np.asarray(ids, np.int32), first, int(pool), num_tokens)
    placeholder_ids = tokenizer.encode(f" {PLACEHOLDER} ")
    if len(placeholder_ids) != 1:
        raise ValueError(f"placeholder {PLACEHOLDER!r} is not one token: {placeholder_ids}")
    pid = placeholder_ids[0]
    plain = tokenizer.encode(text)
    if len(plain) + 2 > tokenizer.context_length:
        raise ValueError(f"template with {num_tokens} pseudo tokens does not fit the context "
                         f"({len(plain) + 2} > {tokenizer.context_length} tokens)")
    ids = tokenizer([text])[0]
    positions = np.flatnonzero(ids == pid)
    first = int(positions[0]) if len(positions) else -1
    if len(positions) != num_tokens or not np.array_equal(
            positions, np.arange(first, first + num_tokens)):
        raise ValueError(f"expected {num_tokens} consecutive placeholder tokens in {text!r}, "
                         f"found them at {positions.tolist()}")
    eot = int(np.flatnonzero(ids == tokenizer.eot_token_id)[0])
    return Template(text, ids, first, eot, num_tokens)
