"""The one fit check: converted parameters against the shapes the Flax module initialises.

Every converter (CLIP OpenAI/HF/open_clip layouts, SigLIP HF/big_vision, SLIP, the native
format) maps checkpoint tensors to Flax paths and hands the result to :func:`check_fit`,
which compares it with ``family.param_shapes(config)`` (``jax.eval_shape`` of the module's
``init``: no weights are allocated) and raises one :class:`CheckpointError` listing every
problem - a wrong shape names the checkpoint tensor, its Flax path and both shapes; missing
and unexpected tensors are listed - and says what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import flax.traverse_util as traverse_util
import numpy as np

from crossgap_jax.models.checkpoint.errors import CheckpointError
from crossgap_jax.models.families import family_of

Path = tuple[str, ...]

FIX = ("Load it with the architecture it was trained as (omit the architecture name to use "
       "the one the file declares or its tensor shapes imply), or convert the right file.")


def expected_shapes(config: Any) -> dict[Path, tuple[int, ...]]:
    """``{Flax path: shape}`` the family's module initialises for ``config``."""
    shapes = traverse_util.flatten_dict(family_of(config).param_shapes(config))
    return {k: tuple(v.shape) for k, v in shapes.items()}


def fit_problems(mismatched: list[str], missing: list[str], unexpected: list[str]) -> list[str]:
    """The sections of a checkpoint-does-not-fit message (empty when it fits)."""
    problems = []
    if mismatched:
        problems.append("shape mismatch:\n  " + "\n  ".join(mismatched))
    if missing:
        problems.append("missing tensors (Flax paths):\n  " + "\n  ".join(missing))
    if unexpected:
        problems.append("unexpected tensors:\n  " + "\n  ".join(sorted(unexpected)))
    return problems


def check_fit(flat: Mapping[Path, Any], config: Any, *, source: str = "checkpoint",
              layout: str | None = None, names: Mapping[Path, str] | None = None,
              unexpected: Iterable[str] = (), mismatched: Iterable[str] = ()) -> dict:
    """Check converted params against the module's shapes; return them as a float32 pytree.

    Args:
        flat: Flax path -> array (any float dtype; cast to float32).
        config: the architecture (its ``family`` selects the module).
        source: what is being loaded, for the message (a path, "checkpoint").
        layout: the checkpoint layout, for the message (``"hf"``, ``"big_vision"``, ...).
        names: Flax path -> checkpoint tensor name, so that messages name the file's tensor.
        unexpected: checkpoint tensors the converter could not map.
        mismatched: problems a converter found before mapping (already-formatted lines).

    Returns:
        The nested params pytree (NumPy float32 leaves).

    Raises:
        CheckpointError: ``"<source> does not fit <family> architecture '<name>'
            (<layout> layout):"`` followed by the shape mismatches (``<tensor> (<flax
            path>): checkpoint (a, b) vs model (c, d)``), missing Flax paths, unexpected
            tensors, and :data:`FIX`.
    """
    want = expected_shapes(config)
    names = names or {}
    bad = list(mismatched)
    unknown = list(unexpected)
    for path, arr in flat.items():
        label = f"{names[path]} ({'/'.join(path)})" if path in names else "/".join(path)
        if path not in want:
            unknown.append(names.get(path, "/".join(path)))
        elif tuple(np.shape(arr)) != want[path]:
            bad.append(f"{label}: checkpoint {tuple(np.shape(arr))} vs model {want[path]}")
        elif not np.issubdtype(np.asarray(arr).dtype, np.floating):
            bad.append(f"{label}: checkpoint dtype {np.asarray(arr).dtype} is not a float")
    missing = ["/".join(p) for p in want if p not in flat]
    problems = fit_problems(bad, missing, unknown)
    if problems:
        family = getattr(config, "family", "clip")
        kind = "" if family == "clip" else f"{_FAMILY_LABEL.get(family, family)} "
        where = f" ({layout} layout)" if layout else ""
        raise CheckpointError(f"{source} does not fit {kind}architecture {config.name!r}"
                              f"{where}:\n" + "\n".join(problems) + "\n" + FIX)
    return traverse_util.unflatten_dict({k: np.asarray(v, np.float32) for k, v in flat.items()})


_FAMILY_LABEL = {"siglip": "SigLIP", "slip": "SLIP"}
