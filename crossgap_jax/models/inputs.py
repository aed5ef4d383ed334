"""Host-side checks of text-encoder inputs, run once per call before the compiled encoder.

The compiled encoders cannot raise on a bad value: inside jitted code an id outside the
vocabulary or a pool index outside the sequence gives a NaN row (see
:func:`~crossgap_jax.models.layers._module_fns.embed_rows`). :func:`check_text_inputs` refuses
such inputs with a message naming the row, column, value and the valid range, so that a
user never gets a NaN or a silently wrong feature from :meth:`CLIP.encode_text
<crossgap_jax.models.bundle.CLIP.encode_text>`. Its cost is a few NumPy reductions over
the ``(N, L)`` ids, once per call (``benchmarks/bench_encode.py`` measures it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossgap_jax.models.clip.tokenizer import eot_indices
from crossgap_jax.models.families import family_of


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_token_ids(ids: Any, config: Any) -> np.ndarray:
    """Validate ``(N, L)`` token ids for ``config`` and return them as int32.

    Args:
        ids: integer array-like ``(N, L)`` (integral floats are accepted).
        config: the model config (``config.text.vocab_size``, ``context_length``).

    Returns:
        ``(N, L)`` int32 ids (a copy when a conversion was needed).

    Raises:
        TypeError: the ids are not integers.
        ValueError: not 2-D; no positions; more positions than the context; an id outside
            ``[0, vocab_size)`` (the message names the first one: row, column, value).
    """
    arr = np.asarray(ids)
    if arr.ndim != 2:
        raise ValueError(f"token ids must be (N, L), got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        integral = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(
            np.all(arr == np.round(arr)))
        if not integral:
            raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    t = config.text
    n, length = arr.shape
    if length == 0:
        raise ValueError("token ids have no positions (shape (N, 0)); tokenize the texts with "
                         "the model's tokenizer (bundle.tokenize)")
    if length > t.context_length:
        raise ValueError(
            f"token ids have {length} positions, more than the context length "
            f"{t.context_length} of {config.name}; tokenize with the model's tokenizer "
            f"(bundle.tokenize truncates and keeps EOT last) or cut the rows to "
            f"{t.context_length}")
    if n and (arr.min() < 0 or arr.max() >= t.vocab_size):
        bad = (arr < 0) | (arr >= t.vocab_size)
        row, col = _first_bad(bad)
        raise ValueError(
            f"token id {arr[row, col]} at row {row}, column {col} is outside the vocabulary "
            f"[0, {t.vocab_size}) of {config.name} ({int(bad.sum())} such ids); use ids from "
            f"the model's tokenizer (bundle.tokenize)")
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_pool_index(index: Any, num_rows: int, length: int) -> np.ndarray:
    """Validate the pooled (EOT) positions: ``(N,)`` integers in ``[0, length)``.

    A scalar is broadcast to every row.

    Raises:
        ValueError: wrong shape, not integers, or a position outside the sequence (the
            message names the row and value; negative positions are refused, not wrapped).
    """
    idx = np.asarray(index)
    if idx.ndim == 0:
        idx = np.full((num_rows,), idx)
    if idx.shape != (num_rows,):
        raise ValueError(f"eot_index must be ({num_rows},), one position per row of the ids, "
                         f"got shape {idx.shape}")
    if idx.dtype.kind not in "iu" and not (
            idx.dtype.kind == "f" and bool(np.all(idx == np.round(idx)))):
        raise TypeError(f"eot_index must be integers, got dtype {idx.dtype}")
    if num_rows and (idx.min() < 0 or idx.max() >= length):
        bad = (idx < 0) | (idx >= length)
        row = int(np.argmax(bad))
        raise ValueError(
            f"eot_index {idx[row]} for row {row} is outside the sequence: positions 0..{length - 1}"
            f" of ids with {length} positions ({int(bad.sum())} such rows)")
    return idx.astype(np.int32)


def check_text_inputs(ids: Any, eot_index: Any, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate the inputs of a text encoder call and complete them as the family needs.

    1. :func:`check_token_ids` (shape, integer type, context length, vocabulary range);
    2. a family whose encoder reads the whole context (``CAUSAL_TEXT = False``, SigLIP)
       gets ids shorter than the context padded exactly as its tokenizer pads
       (``pad_token_ids(ids, config)`` hook); with an explicit ``eot_index`` such ids are
       refused instead (the intended position in the padded sequence is ambiguous);
    3. the pooled position: ``eot_index`` if given (checked by :func:`check_pool_index`),
       else the family's ``pool_indices(ids, config)`` hook (SigLIP: the last position),
       else the first ``config.text.eot_token_id`` of each row (raises if a row has none).

    Returns:
        ``(ids (N, L) int32, pool positions (N,) int32)``.
    """

    ids = check_token_ids(ids, config)
    family = family_of(config)
    ctx = config.text.context_length
    if ids.shape[1] < ctx and not getattr(family, "CAUSAL_TEXT", True):
        pad = getattr(family, "pad_token_ids", None)
        if eot_index is not None or pad is None:
            raise ValueError(
                f"{config.name} encodes the whole context of {ctx} positions, but the ids have "
                f"{ids.shape[1]}; tokenize with the model's tokenizer (bundle.tokenize), which "
                f"pads to {ctx}" + ("" if pad is None else ", or leave eot_index unset so the "
                                    "ids are padded the same way"))
        ids = pad(ids, config)
    if eot_index is not None:
        return ids, check_pool_index(eot_index, ids.shape[0], ids.shape[1])
    pool = getattr(family, "pool_indices", None)
    if pool is not None:
        return ids, np.asarray(pool(ids, config), np.int32)
    return ids, eot_indices(ids, config.text.eot_token_id)
