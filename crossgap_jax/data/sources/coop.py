"""Image source: CoOp datasets with a split_zhou_<Name>.json file."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from crossgap_jax.data._fs import (
    bad_split,
    candidate_dirs,
    layout_error,
    read_json,
)
from crossgap_jax.data.types import ImageSplit

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CoopSpec:
    """Where CoOp keeps one dataset: folder names, image folder, split file."""

    name: str
    subdirs: tuple[str, ...]
    image_dir: str  # relative to the dataset folder; "" is the dataset folder itself
    split_file: str


COOP_SPECS: dict[str, CoopSpec] = {
    s.name: s
    for s in [
        CoopSpec("caltech101", ("caltech-101", "caltech101"), "101_ObjectCategories",
                 "split_zhou_Caltech101.json"),
        CoopSpec("dtd", ("dtd", "dtd/dtd"), "images", "split_zhou_DescribableTextures.json"),
        CoopSpec("eurosat", ("eurosat",), "2750", "split_zhou_EuroSAT.json"),
        CoopSpec("food101", ("food-101", "food101"), "images", "split_zhou_Food101.json"),
        CoopSpec("oxford_flowers", ("oxford_flowers", "flowers102", "oxford_flowers102"), "jpg",
                 "split_zhou_OxfordFlowers.json"),
        CoopSpec("oxford_pets", ("oxford_pets", "oxford-iiit-pet", "oxford_iiit_pet"), "images",
                 "split_zhou_OxfordPets.json"),
        CoopSpec("stanford_cars", ("stanford_cars", "stanford-cars"), "",
                 "split_zhou_StanfordCars.json"),
        CoopSpec("sun397", ("sun397",), "SUN397", "split_zhou_SUN397.json"),
        CoopSpec("ucf101", ("ucf101",), "UCF-101-midframes", "split_zhou_UCF101.json"),
    ]
}


def _coop_candidates(spec: CoopSpec, d: str) -> list[tuple[str, str]]:
    img = os.path.join(d, spec.image_dir) if spec.image_dir else d
    return [(img, os.path.join(d, spec.split_file)), (img, os.path.join(img, spec.split_file))]


def locate_coop(spec: CoopSpec, root: str) -> tuple[str, str] | None:
    """``(image_dir, split_json)`` of a CoOp dataset under ``root``, or None."""
    for d in candidate_dirs(root, spec.subdirs):
        for img, js in _coop_candidates(spec, d):
            if os.path.isfile(js) and os.path.isdir(img):
                return img, js
    return None


def coop_layout(spec: CoopSpec) -> str:
    img = spec.image_dir or "<images, paths as in the split file>"
    return (
        f"<root>/{spec.subdirs[0]}/{img}/...  (the images)\n"
        f"<root>/{spec.subdirs[0]}/{spec.split_file}  (or inside {img}/):\n"
        '  {"train"|"val"|"test": [[relative_path, label, classname], ...]}'
    )


def load_coop(spec: CoopSpec, root: str, split: str) -> ImageSplit:
    """One split of a CoOp dataset, as listed by its ``split_zhou_*.json`` file.

    Args:
        spec: the dataset's :class:`CoopSpec`.
        root: data root or dataset folder.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DatasetLayoutError: no split file / image folder under ``root``.
    """
    found = locate_coop(spec, root)
    if found is None:
        searched = "\n".join(
            f"  {js}  with images in {img}"
            for d in [root] + [os.path.join(root, s) for s in spec.subdirs]
            for img, js in _coop_candidates(spec, d)
        )
        raise layout_error(spec.name, root, searched, coop_layout(spec))
    img_dir, js = found
    data = read_json(js)
    if split not in data:
        raise bad_split(spec.name, split, sorted(data))
    names: dict[int, str] = {}
    for part in data.values():
        for _, label, cname in part:
            if names.setdefault(int(label), cname) != cname:
                raise ValueError(f"{js}: label {label} has two class names")
    classnames = [names.get(i, f"class_{i}") for i in range(max(names) + 1)]
    rows = data[split]
    return ImageSplit(
        name=spec.name,
        split=split,
        items=[r[0] for r in rows],
        paths=[os.path.join(img_dir, r[0]) for r in rows],
        labels=np.array([int(r[1]) for r in rows], np.int64),
        classnames=classnames,
        root=img_dir,
        extra={"split_file": js},
    )
