"""OTI and OVI: the whole optimisation as one compiled XLA program per batch.

Public: :func:`oti`, :func:`ovi` (bundle in, :class:`InversionResult` out), their typed
form :func:`invert` with :class:`OTISettings` / :class:`OVISettings` /
:class:`ExecutionSettings` (:mod:`~crossgap_jax.inversion.config`), and the
functional cores :func:`oti_fn`, :func:`ovi_fn`, :func:`oti_features`,
:func:`ovi_features` for users who jit/vmap/shard themselves; :func:`invert_dataset` /
:func:`load_inverted` for resumable (multi-host) runs over a dataset. See docs/inversion.md.
"""

from crossgap_jax.inversion.config import (
    DEFAULT_TEMPLATE,
    ExecutionSettings,
    InversionSettings,
    OTISettings,
    OVISettings,
    check_steps,
)
from crossgap_jax.inversion.core import (
    LOSS_REDUCTIONS,
    HParams,
    RawInversion,
    check_loss_reduction,
    cosine_loss,
    run_inversion,
)
from crossgap_jax.inversion.driver import InversionResult
from crossgap_jax.inversion.interrupt import InversionAborted, InversionInterrupted
from crossgap_jax.inversion.inverters import (
    expand_patch_tokens,
    invert,
    oti,
    oti_features,
    oti_fn,
    ovi,
    ovi_features,
    ovi_fn,
)
from crossgap_jax.inversion.numerics import jax_numerics
from crossgap_jax.inversion.resumable import (
    SHARD_GLOB,
    ResumeMismatchError,
    invert_dataset,
    load_inverted,
)
from crossgap_jax.inversion.sharding import DATA_AXIS, make_mesh, process_shard
from crossgap_jax.inversion.template import Template, prepare_template

__all__ = [
    "SHARD_GLOB",
    "DATA_AXIS", "LOSS_REDUCTIONS",
    "DEFAULT_TEMPLATE", "ExecutionSettings", "HParams", "InversionSettings", "OTISettings",
    "OVISettings", "invert", "InversionResult", "RawInversion", "ResumeMismatchError",
    "Template", "cosine_loss", "expand_patch_tokens", "invert_dataset", "load_inverted",
    "check_loss_reduction", "check_steps", "make_mesh", "oti", "oti_features", "oti_fn",
    "ovi", "ovi_features", "ovi_fn",
    "prepare_template", "process_shard", "run_inversion",
    "InversionAborted", "InversionInterrupted", "jax_numerics",
]
