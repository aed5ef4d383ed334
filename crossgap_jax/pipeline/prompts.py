"""Zero-shot classification prompts: CoOp's per-dataset templates (facts of that protocol),
and the texts OVI inverts (:func:`ovi_target_split`)."""

from __future__ import annotations

import dataclasses
from typing import Any

COOP_TEMPLATES: dict[str, str] = {
    "caltech101": "a photo of a {}.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "food101": "a photo of {}, a type of food.",
    "imagenet": "a photo of a {}.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "stanford_cars": "a photo of a {}.",
    "sun397": "a photo of a {}.",
    "ucf101": "a photo of a person doing {}.",
}

#: The seven ImageNet prompt templates of CLIP's prompt-engineering notebook, which the
#: few-shot code of Tip-Adapter / the ICLR24 GDA baseline / Herzog & Wang uses for its ImageNet
#: zero-shot classifier (``few_shot_classification/datasets/imagenet.py``,
#: ``imagenet_templates``); Herzog & Wang's few-shot span is built from that classifier.
IMAGENET_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.",
                      "a photo of the large {}.", "a {} in a video game.", "art of the {}.",
                      "a photo of the small {}.")

DEFAULT_CLASS_TEMPLATE = "a photo of {}"

#: The class prompts that the OVI zero-shot variant inverts (the authors' OVI template),
#: whatever the dataset's CoOp prompt.
OVI_CLASS_TEMPLATE = DEFAULT_CLASS_TEMPLATE


def clean_classname(name: str) -> str:
    """A class name as it goes into every prompt: ``_`` replaced by a space (the authors'
    zero-shot, OTI and OVI code does this; e.g. ``"Leopards_easy"`` -> ``"Leopards easy"``)."""
    return name.replace("_", " ")


#: How OVI's target texts are built: ``"authors"`` (default; the authors' OVI replaces ``_``
#: by a space in every text it inverts: class prompts, captions, text-dataset queries) or
#: ``"raw"`` (the texts as read, as the text->text baseline encodes them).
OVI_TEXT_MODES = ("authors", "raw")


def ovi_target_split(split: Any, mode: str = "authors") -> Any:
    """The split whose text features OVI inverts: ``split`` with ``_`` replaced by a space
    in every text (``mode="authors"``), or ``split`` itself (``"raw"``; image splits are
    returned unchanged). Item names, labels and groups are kept, so the inverted features
    align with the raw split's items; the changed texts give the features their own cache
    entry (the feature key hashes the texts).

    Raises:
        ValueError: ``mode`` not in :data:`OVI_TEXT_MODES`.
    """
    if mode not in OVI_TEXT_MODES:
        raise ValueError(f"ovi_text must be one of {OVI_TEXT_MODES}, got {mode!r}")
    if mode == "raw" or split.modality != "text":
        return split
    return dataclasses.replace(split, texts=[clean_classname(t) for t in split.texts])


def class_prompt(dataset: str, default: str = "a photo of a {}.") -> str:
    """CoOp's prompt template for ``dataset`` (``tfds:`` prefixes and aliases tolerated)."""
    name = dataset.split(":", 1)[-1]
    return COOP_TEMPLATES.get(name, default)
