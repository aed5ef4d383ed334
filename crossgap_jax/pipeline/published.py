"""The paper's published averages (PAPER.md, poster table), for side-by-side tables."""

from __future__ import annotations

from crossgap_jax.models import OPENAI_RELEASES, openai_release
from crossgap_jax.pipeline.presets import PRESETS

# preset -> {"image": (image->image, OTI->image), "text": (text->text, OVI->text),
#            "zero_shot": (standard, OTI)} in percent.
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "clip_vitb32": {"image": (39.2, 41.2), "text": (37.7, 40.6), "zero_shot": (61.9, 56.4)},
    "clip_vitl14": {"image": (52.0, 55.3), "text": (38.2, 41.3), "zero_shot": (72.2, 68.4)},
    "openclip_vitb32": {"image": (47.3, 49.5), "text": (42.8, 45.3), "zero_shot": (69.4, 66.1)},
    "openclip_vitl14": {"image": (60.4, 63.6), "text": (45.1, 47.0), "zero_shot": (78.9, 77.0)},
    "siglip_vitb16": {"image": (55.5, 58.3), "text": (40.8, 44.4), "zero_shot": (75.1, 66.3)},
    "slip_vitb16": {"image": (35.1, 35.3)},
    "slip_vitl16": {"image": (36.7, 37.1)},
}


def published_row(preset: str | None) -> dict[str, tuple[float, float]]:
    """The published averages of ``preset`` ({} when the paper has none)."""
    return dict(PUBLISHED.get(preset or "", {}))


def published_for(model: str | None, pretrained: str | None,
                  checkpoint_sha256: str | None = None) -> tuple[str, dict] | None:
    """The paper's published averages for the model that actually ran, or None.

    A row belongs to a preset's *model and weights*, not to its name: it is returned only
    when ``model`` is the preset's architecture and the weights are the preset's release,
    i.e. ``pretrained`` is the preset's tag (``"openai"``, ``"datacomp_xl_s13b_b90k"``, ...)
    or, for OpenAI releases, ``checkpoint_sha256`` is the release file's published sha256
    (a local copy of ``ViT-B-32.pt``). A run of another model under the preset's settings
    (the demo model, a fine-tune) gets no published row.

    Returns:
        ``(preset name, row)`` as in :data:`PUBLISHED`, or None.
    """

    for preset, row in PUBLISHED.items():
        p = PRESETS.get(preset)
        if model is None or p is None or p.model != model:
            continue
        if pretrained is not None and pretrained == p.pretrained:
            return preset, dict(row)
        if checkpoint_sha256 and p.pretrained == "openai":
            if model in OPENAI_RELEASES and openai_release(model)[1] == checkpoint_sha256:
                return preset, dict(row)
    return None
