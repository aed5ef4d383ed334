"""The feature types and classify variants a run measures, and which need a text tower.

One table, imported by the run (which computes a side's features) and by the measurements
(which check a request before any work).
"""

from __future__ import annotations

from typing import Any

# pca / centered: fitted on the gallery, applied to both sides (pipeline.baselines)
FEATURE_TYPES = ("image", "text", "oti", "ovi", "isoclip", "isotropic-window", "pca", "centered")
# span: Herzog & Wang's span projection (text-feature span, Run.span); i0t / gr-clip: the
# post-hoc per-modality mean removal of I0T and GR-CLIP (pipeline.baselines.apply_fitted)
FEATURE_TYPES += ("span", "i0t", "gr-clip")
# classify variants: zero-shot (inter-modal, OTI, OVI) and nearest-class-mean (plain projected
# image features, IsoCLIP-mapped features).
# pca-ncm / centered-ncm: full-train NCM with the fitted baselines; fewshot: k-shot NCM for
# several feature types and seeds (pipeline.baselines).
CLASSIFY_VARIANTS = ("inter", "oti", "ovi", "ncm", "isoclip-ncm", "pca-ncm", "centered-ncm",
                     "fewshot")
CLASSIFY_VARIANTS += ("span-ncm",)  # NCM on span-projected features
# Feature types and classify variants that need a text tower (refused, before any work, for
# an image-only backbone such as DINOv2; see models.families.require_text_tower), with the
# words the error uses for each.
NEEDS_TEXT_TOWER = {"text": "text features", "oti": "OTI", "ovi": "OVI",
                    "isoclip": "IsoCLIP", "isotropic-window": "the isotropic-window baseline",
                    "inter": "zero-shot classification", "isoclip-ncm": "IsoCLIP NCM"}
NEEDS_TEXT_TOWER.update({"span": "the span projection (Herzog & Wang)",
                         "span-ncm": "span-projection NCM"})


def check_feature_type(split: Any, feature_type: str) -> None:
    """Raise ValueError unless ``feature_type`` (one of :data:`FEATURE_TYPES`) applies to
    ``split``'s modality (``split.modality``: ``"image"`` / ``"text"``)."""
    if feature_type not in FEATURE_TYPES:
        raise ValueError(f"feature type must be one of {FEATURE_TYPES}, got {feature_type!r}")
    if feature_type in ("image", "text") and split.modality != feature_type:
        raise ValueError(f"{split.name}/{split.split} holds {split.modality}s; "
                         f"feature type {feature_type!r} does not apply")
    if feature_type in ("oti", "ovi"):
        needed = "image" if feature_type == "oti" else "text"
        if split.modality != needed:
            raise ValueError(f"{feature_type.upper()} inverts {needed} features, but "
                             f"{split.name}/{split.split} holds {split.modality}s")
