"""A run's settings, typed and frozen: built once (by the CLI, the demo, a test) and carried
as objects; dicts exist only at the edges (:meth:`RunSettings.as_dict` for records, the
cache keys).

- :class:`RunSettings`: the preset and every switch of a run (compatibility switches of
  docs/fidelity.md, data switches, subset caps, the fitted baselines' settings).
- :class:`BaselineSettings`: the fitted baselines and the few-shot protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from crossgap_jax.data import QRELS_MISSING
from crossgap_jax.inversion import check_loss_reduction
from crossgap_jax.pipeline.presets import Preset
from crossgap_jax.pipeline.prompts import OVI_TEXT_MODES
from crossgap_jax.retrieval import DEFAULT_SEEDS, DEFAULT_SHOTS, check_metric_variant

# few-shot NCM feature types: the default sweep, and every type it takes (span: Herzog &
# Wang's span projection, fitted on class-name texts, so it needs nothing of the support)
DEFAULT_FEWSHOT_TYPES = ("image", "oti", "isoclip", "pca", "centered")
FEWSHOT_TYPES = (*DEFAULT_FEWSHOT_TYPES, "span")
PCA_FIT = ("gallery", "query", "both")
CENTER_FIT = ("modality", "gallery")


@dataclasses.dataclass(frozen=True)
class BaselineSettings:
    """Settings of the fitted baselines and the few-shot protocol.

    Attributes:
        pca_k: principal directions kept; several values = a sweep (few-shot reports one
            entry ``pca-<k>`` each; ``retrieve`` takes exactly one). ``()``: not set (PCA
            is then an error asking for ``--pca-k``).
        pca_whiten: divide PCA coordinates by their standard deviation on the fit set.
        pca_fit: what the PCA (and its mean) is fitted on: ``"gallery"`` (default; in
            few-shot NCM the support set), ``"query"`` (the queries: transductive),
            ``"both"`` (their union).
        center_fit: ``"modality"`` (default): each modality is centred on its own mean:
            the gallery's when both sides share a modality, else each side's own set;
            ``"gallery"``: both sides on the gallery mean.
        normalize_input: L2-normalise the embeddings before centring / PCA.
        shots: few-shot ``k`` values (shots per class).
        seeds: few-shot sampling seeds.
        fewshot_types: feature types of the few-shot sweep.
        span_classes: the ``span`` feature type's class-name file (one name per line;
            None: the shipped pytorch/hub ImageNet list, Herzog & Wang's).
        span_reduce: ``span`` keeps ``d // span_reduce`` directions (theirs: 2).
    """

    pca_k: tuple[int, ...] = ()
    pca_whiten: bool = False
    pca_fit: str = "gallery"
    center_fit: str = "modality"
    normalize_input: bool = True
    shots: tuple[int, ...] = DEFAULT_SHOTS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    fewshot_types: tuple[str, ...] = DEFAULT_FEWSHOT_TYPES
    span_classes: str | None = None
    span_reduce: int = 2

    def __post_init__(self):
        if self.pca_fit not in PCA_FIT:
            raise ValueError(f"pca_fit must be one of {PCA_FIT}, got {self.pca_fit!r}")
        if self.center_fit not in CENTER_FIT:
            raise ValueError(f"center_fit must be one of {CENTER_FIT}, got {self.center_fit!r}")
        bad = [t for t in self.fewshot_types if t not in FEWSHOT_TYPES]
        if bad:
            raise ValueError(f"unknown few-shot feature type(s) {bad}; known: "
                             f"{', '.join(FEWSHOT_TYPES)}")
        if any(int(k) < 1 for k in self.pca_k) or any(int(k) < 1 for k in self.shots):
            raise ValueError("pca_k and shots must be positive integers")
        if isinstance(self.span_reduce, bool) or not isinstance(self.span_reduce, int) \
                or self.span_reduce < 1:
            raise ValueError(f"span_reduce must be a positive integer, got {self.span_reduce!r}")

    def single_pca_k(self) -> int:
        if len(self.pca_k) != 1:
            raise ValueError(f"feature type pca needs exactly one --pca-k K here, got "
                             f"{list(self.pca_k) or 'none'} (a sweep over k: classify "
                             "--variants fewshot --pca-k K1,K2,...)")
        return int(self.pca_k[0])

    def as_record(self) -> dict[str, Any] | None:
        """The JSON form kept in a run's configuration: None for the defaults (no option
        given), else every field (tuples as lists)."""
        if self == BaselineSettings():
            return None
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


ON_ERROR = ("skip", "raise")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything a run's results depend on beyond its weights and data, checked once.

    Attributes:
        preset: the backbone's settings (:class:`~crossgap_jax.pipeline.presets.Preset`;
            after :func:`~crossgap_jax.pipeline.run.make_run`: ``model`` / ``pretrained``
            as loaded).
        dtype: compute dtype of the model (``"float32"``, ``"bfloat16"``, ...).
        max_queries, max_gallery: subset caps of every task (None: full; see
            :func:`~crossgap_jax.pipeline.tasks.limit_task`).
        authors_assets: a checkout of the paper authors' repository (or its
            ``data/summarized_texts``): text datasets then use the authors' gallery
            summaries and 20NG queries (:mod:`crossgap_jax.data.authors_assets`); None: raw
            texts, our queries.
        metric_variant: ``"standard"`` / ``"authors"`` (docs/fidelity.md).
        loss_reduction: ``"per_example"`` / ``"mean"`` (the inversions' loss).
        revisitop1m: the +1M distractors of revisitop tasks: ``"auto"`` / ``"none"`` / a
            folder.
        baselines: the fitted baselines' and few-shot NCM's settings.
        ovi_text: OVI's target texts: ``"authors"`` (``_`` -> space) / ``"raw"``.
        qrels_missing: BEIR qrels naming absent documents: ``"drop"`` / ``"count"``.
        exif_transpose: apply EXIF orientation before preprocessing.
        verify_data: fingerprint image files by their sha256 instead of path, size and
            mtime (:mod:`crossgap_jax.data.fingerprint`).
        on_error: corrupt images: ``"skip"`` (counted) or ``"raise"``.
        record_steps: OTI/OVI steps to snapshot (Figure-2 analysis).

    Raises (on construction):
        ValueError: a switch outside its accepted values (the message lists them).
    """

    preset: Preset
    dtype: str = "float32"
    max_queries: int | None = None
    max_gallery: int | None = None
    authors_assets: str | None = None
    metric_variant: str = "standard"
    loss_reduction: str = "per_example"
    revisitop1m: str = "auto"
    baselines: BaselineSettings = BaselineSettings()
    ovi_text: str = "authors"
    qrels_missing: str = "drop"
    exif_transpose: bool = False
    verify_data: bool = False
    on_error: str = "skip"
    record_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.preset, Preset):
            raise TypeError(f"RunSettings.preset must be a Preset, got "
                            f"{type(self.preset).__name__}")
        if not isinstance(self.baselines, BaselineSettings):
            raise TypeError(f"RunSettings.baselines must be BaselineSettings, got "
                            f"{type(self.baselines).__name__}")
        check_metric_variant(self.metric_variant)
        check_loss_reduction(self.loss_reduction)
        for name, allowed in (("ovi_text", OVI_TEXT_MODES), ("qrels_missing", QRELS_MISSING),
                              ("on_error", ON_ERROR)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got "
                                 f"{getattr(self, name)!r}")
        if not isinstance(self.revisitop1m, str) or not self.revisitop1m:
            raise ValueError(f"revisitop1m must be 'auto', 'none' or a folder, got "
                             f"{self.revisitop1m!r}")
        object.__setattr__(self, "record_steps", tuple(int(s) for s in self.record_steps))

    def replace(self, **changes: Any) -> RunSettings:
        """These settings with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of a record's ``config``: the preset's keys
        (:meth:`~crossgap_jax.pipeline.presets.Preset.as_dict`) and the switches
        (``baselines``: :meth:`BaselineSettings.as_record`). ``verify_data``, ``on_error``
        and ``record_steps`` are in the provenance's ``settings`` instead."""
        return {**self.preset.as_dict(), "dtype": self.dtype, "max_queries": self.max_queries,
                "max_gallery": self.max_gallery, "authors_assets": self.authors_assets,
                "metric_variant": self.metric_variant, "loss_reduction": self.loss_reduction,
                "revisitop1m": self.revisitop1m, "baselines": self.baselines.as_record(),
                "ovi_text": self.ovi_text, "qrels_missing": self.qrels_missing,
                "exif_transpose": self.exif_transpose}
