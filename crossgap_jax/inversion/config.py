"""Typed settings of OTI/OVI: what is computed, and how it is executed.

The one source of the inversion defaults. :class:`OTISettings` / :class:`OVISettings` hold
what determines the result (steps, tokens, AdamW hyper-parameters, template, objective,
record steps, seed); :class:`ExecutionSettings` holds what changes only how it is computed
(batch size, precision, devices, progress, exact shortcuts), so two runs that differ only in
execution settings give the same result up to float rounding. :func:`split_kwargs` turns the
keyword arguments of :func:`~crossgap_jax.inversion.oti` / :func:`~crossgap_jax.inversion.ovi`
into the two (the keyword edge); :func:`~crossgap_jax.inversion.invert` and
:func:`~crossgap_jax.inversion.invert_dataset` take the objects. Paper defaults: PAPER.md (OTI 150
steps, OVI 1000, AdamW lr 2e-2, weight decay 0.01, one pseudo token, "a photo of {}").

Errors: every constructor validates its fields and raises ``ValueError`` naming the field
and the allowed values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from crossgap_jax.inversion.core import check_loss_reduction

DEFAULT_TEMPLATE = "a photo of {}"
ON_NONFINITE = ("warn", "raise")
PRECISIONS = ("float32", "bfloat16", "float16")


def check_steps(steps: int, record_steps: Sequence[int], name: str = "steps"
                ) -> tuple[int, ...]:
    """The one check of an optimisation length and its record steps.

    Args:
        steps: optimisation steps; a positive int (not a bool).
        record_steps: steps after which a snapshot is taken, any order, repeats allowed.
        name: how ``steps`` is called in the error (``"oti_steps"``, ...).

    Returns:
        ``record_steps`` sorted and unique.

    Raises:
        ValueError: ``steps`` not a positive int, or a record step outside ``1..steps``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name} must be a positive int, got {steps!r}")
    rec = tuple(sorted({int(s) for s in record_steps}))
    bad = [s for s in rec if not 1 <= s <= steps]
    if bad:
        raise ValueError(f"record_steps must lie in 1..{name}={steps}; got {bad}")
    return rec


@dataclasses.dataclass(frozen=True)
class InversionSettings:
    """What an inversion computes (shared by OTI and OVI; use the two subclasses).

    Attributes:
        steps: optimisation steps (>= 1).
        num_tokens: pseudo tokens per example (OTI: R, OVI: P; >= 1).
        learning_rate, weight_decay, b1, b2, eps: AdamW with PyTorch's semantics.
        seed: PRNG seed of the ``N(0, 0.02^2)`` init (example i's init depends only on the
            seed and i).
        record_steps: sorted unique steps in ``1..steps`` after which tokens and features
            are snapshotted (any sequence is accepted and normalised).
        loss_reduction: ``"per_example"`` (each example its own ``1 - cos``) or ``"mean"``
            (the authors' batch mean; see docs/fidelity.md).
    """

    method: ClassVar[str] = ""

    steps: int = 150
    num_tokens: int = 1
    learning_rate: float = 2e-2
    weight_decay: float = 0.01
    seed: int = 0
    record_steps: tuple[int, ...] = ()
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    loss_reduction: str = "per_example"

    def __post_init__(self) -> None:
        if isinstance(self.num_tokens, bool) or not isinstance(self.num_tokens, int) \
                or self.num_tokens < 1:
            raise ValueError(f"num_tokens must be an int >= 1, got {self.num_tokens!r}")
        object.__setattr__(self, "record_steps", check_steps(self.steps, self.record_steps))
        check_loss_reduction(self.loss_reduction)
        for name in ("learning_rate", "weight_decay", "b1", "b2", "eps"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "seed", int(self.seed))

    def manifest(self, batch_size: int | None = None) -> dict[str, Any]:
        """The JSON-able description of what is computed (a resumable run's identity).

        The default ``loss_reduction`` is left out (manifests written before it existed stay
        valid); with ``"mean"`` the batch composition is part of the objective, so
        ``batch_size`` is included.
        """
        d = dataclasses.asdict(self)
        d["record_steps"] = list(self.record_steps)
        d["method"] = self.method
        if self.loss_reduction == "per_example":
            del d["loss_reduction"]
        elif batch_size is not None:
            d["batch_size"] = int(batch_size)
        return d


@dataclasses.dataclass(frozen=True)
class OTISettings(InversionSettings):
    """OTI (image features -> pseudo word tokens): :class:`InversionSettings` plus the
    template, a sentence with one ``{}`` where the R pseudo tokens go. Paper: 150 steps."""

    method: ClassVar[str] = "oti"

    steps: int = 150
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.template, str) or self.template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}': {self.template!r}")


@dataclasses.dataclass(frozen=True)
class OVISettings(InversionSettings):
    """OVI (text features -> pseudo patch tokens): :class:`InversionSettings`.
    Paper: 1000 steps; P = 1 for CLIP B/32, 4 for L/14."""

    method: ClassVar[str] = "ovi"

    steps: int = 1000


@dataclasses.dataclass(frozen=True)
class ExecutionSettings:
    """How an inversion runs; none of these changes the result beyond float rounding
    (with ``loss_reduction="mean"`` the batch size does: it is then part of the objective).

    Attributes:
        batch_size: examples per compiled batch (rounded up to the device count).
        precision: compute dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``) or
            ``None``: the model bundle's.
        devices: devices to shard the examples over (``None``: all local devices).
        progress: progress bar over the steps (``None``: when there is more than one batch).
        on_nonfinite: ``"warn"`` or ``"raise"`` on NaN/inf losses, tokens or features.
        pad_to: compile for ``min(batch_size, pad_to)`` rows even when N is smaller.
        truncate: OTI: run the text encoder only up to the pooled position (exact for a
            causal text tower).
        cache_prefix: OTI: template positions before the placeholder computed once per
            call (exact for a causal text tower).
        pooled_only: run the last block at the pooled position only (exact).
    """

    batch_size: int = 64
    precision: str | None = None
    devices: tuple[Any, ...] | None = None
    progress: bool | None = None
    on_nonfinite: str = "warn"
    pad_to: int | None = None
    truncate: bool = True
    cache_prefix: bool = True
    pooled_only: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) \
                or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS} or None, "
                             f"got {self.precision!r}")
        if self.on_nonfinite not in ON_NONFINITE:
            raise ValueError(f"on_nonfinite must be 'warn' or 'raise', got {self.on_nonfinite!r}")
        if self.devices is not None:
            devices = tuple(self.devices)
            if not devices:
                raise ValueError("devices must name at least one device (or be None: all)")
            object.__setattr__(self, "devices", devices)
        if self.pad_to is not None and int(self.pad_to) < 0:
            raise ValueError(f"pad_to must be >= 0 or None, got {self.pad_to!r}")


SETTINGS = {"oti": OTISettings, "ovi": OVISettings}
# Execution options each method's keyword API accepts (the others belong to the other one).
EXECUTION_OPTIONS = {
    "oti": ("batch_size", "precision", "devices", "progress", "on_nonfinite", "pad_to",
            "truncate", "cache_prefix"),
    "ovi": ("batch_size", "precision", "devices", "progress", "on_nonfinite", "pad_to",
            "pooled_only"),
}


def settings_fields(method: str) -> tuple[str, ...]:
    """Names of the :class:`InversionSettings` fields of ``method`` (``"oti"``/``"ovi"``)."""
    return tuple(f.name for f in dataclasses.fields(_settings_type(method)))


def _settings_type(method: str) -> type[InversionSettings]:
    if method not in SETTINGS:
        raise ValueError(f"method must be 'oti' or 'ovi', got {method!r}")
    return SETTINGS[method]


def split_kwargs(method: str, kwargs: Mapping[str, Any]
                 ) -> tuple[InversionSettings, ExecutionSettings]:
    """Keyword arguments of ``oti``/``ovi`` -> (settings, execution settings).

    Missing names take the dataclass defaults (the one source of defaults).

    Raises:
        TypeError: a name that is neither a setting nor an execution option of ``method``.
        ValueError: an invalid value (from the dataclasses' validation).
    """
    cls = _settings_type(method)
    names = set(settings_fields(method))
    ex_names = set(EXECUTION_OPTIONS[method])
    unknown = sorted(set(kwargs) - names - ex_names)
    if unknown:
        raise TypeError(f"unknown {method} arguments: {unknown} (settings: {sorted(names)}; "
                        f"execution options: {sorted(ex_names)})")
    settings = cls(**{k: v for k, v in kwargs.items() if k in names})
    execution = ExecutionSettings(**{k: v for k, v in kwargs.items() if k in ex_names})
    return settings, execution


def as_kwargs(settings: InversionSettings,
              execution: ExecutionSettings | None = None) -> dict[str, Any]:
    """The inverse of :func:`split_kwargs`: keyword arguments for ``oti``/``ovi``."""
    kw = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if execution is not None:
        kw.update({k: getattr(execution, k) for k in EXECUTION_OPTIONS[settings.method]})
    return kw
