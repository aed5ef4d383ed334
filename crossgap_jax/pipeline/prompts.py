"""Zero-shot classification prompts: CoOp's per-dataset templates (facts of that protocol)."""

from __future__ import annotations

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

DEFAULT_CLASS_TEMPLATE = "a photo of {}"

#: The class prompts that the OVI zero-shot variant inverts (the authors' OVI template),
#: whatever the dataset's CoOp prompt.
OVI_CLASS_TEMPLATE = DEFAULT_CLASS_TEMPLATE


def clean_classname(name: str) -> str:
    """A class name as it goes into every prompt: ``_`` replaced by a space (the authors'
    zero-shot, OTI and OVI code does this; e.g. ``"Leopards_easy"`` -> ``"Leopards easy"``)."""
    return name.replace("_", " ")


def class_prompt(dataset: str, default: str = "a photo of a {}.") -> str:
    """CoOp's prompt template for ``dataset`` (``tfds:`` prefixes and aliases tolerated)."""
    name = dataset.split(":", 1)[-1]
    return COOP_TEMPLATES.get(name, default)
