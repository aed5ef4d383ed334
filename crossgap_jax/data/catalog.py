"""The built-in registry entries: one :class:`~crossgap_jax.data.types.DatasetInfo` per dataset,
pointing at its reader in :mod:`crossgap_jax.data.sources`.

:mod:`crossgap_jax.data.registry` registers them (:func:`register_builtin_datasets`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from crossgap_jax.data._fs import layout_error, looked_for
from crossgap_jax.data.sources import (
    beir,
    captions,
    cisi,
    coop,
    cub,
    embedded,
    fgvc_aircraft,
    imagefolder,
    imagenet,
    imdb,
    inaturalist,
    jsonl,
    newsgroups,
    places365,
    revisitop,
    sop,
    tfds,
)
from crossgap_jax.data.types import DatasetInfo, TextSplit


def _found(locate: Callable[..., Any]) -> Callable[[str], str | None]:
    def wrapped(root: str) -> str | None:
        r = locate(root)
        if isinstance(r, tuple):
            r = r[0]
        return r

    return wrapped


def builtin_datasets() -> list[DatasetInfo]:
    """The registry entries of every built-in dataset (one call per source module's reader):
    the paper's image and text datasets, the generic ``imagefolder`` / ``jsonl`` / ``beir``
    layouts, the packaged demo data and the ``tfds:<name>`` family."""
    out: list[DatasetInfo] = []
    coop_desc = {
        "caltech101": "Caltech101 objects (CoOp split, 100 classes)",
        "dtd": "Describable Textures (CoOp split, 47 classes)",
        "eurosat": "EuroSAT satellite images (CoOp split, 10 classes)",
        "food101": "Food-101 (CoOp split, 101 classes)",
        "oxford_flowers": "Oxford Flowers102 (CoOp split, 102 classes)",
        "oxford_pets": "Oxford-IIIT Pets (CoOp split, 37 classes)",
        "stanford_cars": "Stanford Cars (CoOp split, 196 classes)",
        "sun397": "SUN397 scenes (CoOp split, 397 classes)",
        "ucf101": "UCF101 action mid-frames (CoOp split, 101 classes)",
    }
    for name, spec in coop.COOP_SPECS.items():
        out.append(DatasetInfo(
            name, "image", ("train", "val", "test"), "test", "train", "label",
            coop.coop_layout(spec), coop_desc[name],
            functools.partial(coop.load_coop, spec),
            _found(functools.partial(coop.locate_coop, spec)),
        ))
    out.append(DatasetInfo(
        "fgvc_aircraft", "image", ("train", "val", "test"), "test", "train", "label",
        fgvc_aircraft.FGVC_LAYOUT, "FGVC-Aircraft variants (official split as CoOp, 100 classes)",
        fgvc_aircraft.load_fgvc_aircraft, fgvc_aircraft.locate_fgvc,
    ))
    out.append(DatasetInfo(
        "imagenet", "image", ("train", "test"), "test", "train", "label",
        imagenet.IMAGENET_LAYOUT,
        "ImageNet-1k (test = the 50k val images, as CoOp)", imagenet.load_imagenet,
        imagenet.locate_imagenet,
    ))
    out.append(DatasetInfo(
        "cub2011", "image", ("all", "train", "test"), "all", "all", "label", cub.CUB_LAYOUT,
        "CUB-200-2011 birds, all vs all (query removed from its gallery)", cub.load_cub,
        cub.locate_cub,
    ))
    out.append(DatasetInfo(
        "sop", "image", ("test", "train"), "test", "test", "label", sop.SOP_LAYOUT,
        "Stanford Online Products, test vs test (query removed from its gallery)",
        sop.load_sop, sop.locate_sop,
    ))
    # IsoCLIP's two extra image datasets (simomagi/IsoCLIP): all vs all, query removed.
    out.append(DatasetInfo(
        "places365", "image", places365.PLACES_SPLITS, "val", "val", "label",
        places365.PLACES_LAYOUT,
        "Places365-Standard val (36,500 images, 365 scenes), all vs all as IsoCLIP",
        places365.load_places365, places365.locate_places365,
    ))
    out.append(DatasetInfo(
        "inaturalist2021", "image", inaturalist.INAT_SPLITS, "train_mini", "train_mini", "label",
        inaturalist.INAT_LAYOUT,
        "iNaturalist 2021 train_mini (500,000 images, 10,000 species), all vs all as IsoCLIP",
        inaturalist.load_inaturalist, inaturalist.locate_inaturalist,
    ))
    for name, title in (("roxford5k", "Revisited Oxford"), ("rparis6k", "Revisited Paris")):
        out.append(DatasetInfo(
            name, "image", ("query", "gallery"), "query", "gallery", "revisitop",
            revisitop.revisitop_layout(name), f"{title}: 70 queries, revisitop Easy/Medium/Hard",
            functools.partial(revisitop.load_revisitop, name),
            functools.partial(revisitop.locate_revisitop, name),
        ))
    for name, spec in captions.CAPTION_SPECS.items():
        default = "test" if name == "coco_text" else "val"
        out.append(DatasetInfo(
            name, "text", spec.splits, default, default, "captions", captions.caption_layout(spec),
            {"coco_text": "COCO captions (Karpathy 5k test)",
             "flickr30k_text": "Flickr30k captions (Karpathy val)",
             "nocaps_text": "NoCaps val captions"}[name]
            + ": first caption of each image vs the others",
            functools.partial(captions.load_captions, spec),
            functools.partial(captions.locate_captions, spec),
        ))
    out.append(DatasetInfo(
        "imdb_text", "text", ("queries", "all", "train", "test"), "queries", "all",
        "class_queries", imdb.IMDB_LAYOUT,
        "IMDB: 2 sentiment descriptions vs the 50k reviews", imdb.load_imdb, imdb.locate_imdb,
    ))
    out.append(DatasetInfo(
        "newsgroup_text", "text", ("queries", "test", "train", "all"), "queries", "test",
        "class_queries", newsgroups.NEWSGROUP_LAYOUT,
        "20 Newsgroups: 20 class descriptions vs the test posts (sklearn order)",
        newsgroups.load_newsgroups, newsgroups.locate_newsgroups,
    ))
    for name, hub in beir.NANOBEIR_NAMES.items():
        subdirs = beir.beir_subdirs(hub)
        locate = functools.partial(beir.locate_beir, subdirs=subdirs)
        out.append(DatasetInfo(
            name, "text", ("queries", "corpus"), "queries", "corpus", "qrels",
            f"<root>/{hub}/ (or {subdirs[1]}/, NanoBEIR/{hub}/):\n" + beir.BEIR_LAYOUT,
            f"{hub} (NanoBEIR): queries vs corpus with qrels",
            functools.partial(_load_beir_named, name, locate, hub), locate,
        ))
    out.append(DatasetInfo(
        "cisi", "text", ("queries", "corpus"), "queries", "corpus", "qrels", cisi.CISI_LAYOUT,
        "CISI (Glasgow): 76 judged queries vs 1,460 abstracts", cisi.load_cisi, cisi.locate_cisi,
    ))
    # Generic layouts: root is the dataset folder / file itself.
    out.append(DatasetInfo(
        "imagefolder", "image", ("all", "train", "val", "test", "query", "gallery"), "all", "all",
        "label",
        imagefolder.IMAGEFOLDER_LAYOUT, "any folder with one sub-folder per class",
        imagefolder.load_imagefolder,
        imagefolder.find_imagefolder, generic=True,
    ))
    out.append(DatasetInfo(
        "jsonl", "text", ("all",), "all", "all", "label", jsonl.JSONL_LAYOUT,
        "texts with labels in a JSONL file", jsonl.load_jsonl,
        lambda r: r if os.path.isfile(r) and r.endswith(".jsonl") else None, generic=True,
    ))
    out.append(DatasetInfo(
        "beir", "text", ("queries", "corpus"), "queries", "corpus", "qrels", beir.BEIR_LAYOUT,
        "any BEIR / NanoBEIR collection folder", _load_beir_generic,
        lambda r: r if beir.beir_format(r) else None, generic=True,
    ))
    # Shipped with the package (the offline demo): readable without a data root.
    out.append(DatasetInfo(
        embedded.IMAGE_NAME, "image", ("train", "test"), "test", "train", "label", embedded.LAYOUT,
        "embedded Caltech101 subset (CoOp split, 64 px): test queries vs train gallery",
        embedded.load_demo_images, embedded.locate_demo, packaged=True,
    ))
    out.append(DatasetInfo(
        embedded.TEXT_NAME, "text", ("queries", "gallery"), "queries", "gallery", "class_queries",
        embedded.LAYOUT, "captions of the embedded Caltech101 classes from held-out templates: "
        "one template's captions vs the others'", embedded.load_demo_texts, embedded.locate_demo,
        packaged=True,
    ))
    out.append(DatasetInfo(
        "tfds", "image", (), "test", "train", "label", tfds.LAYOUT,
        "any dataset prepared in a tensorflow-datasets data_dir: tfds:<name>",
        tfds.load_family_root, tfds.locate_family, root_optional=True, members=tfds.member_info,
    ))
    return out


def _load_beir_named(
    name: str, locate: Callable[[str], str | None], hub: str, root: str, split: str,
    **options: Any,
) -> TextSplit:
    d = locate(root)
    if d is None:
        searched = looked_for(root, beir.beir_subdirs(hub), ["corpus/", "queries/", "qrels/",
                                                           "corpus.jsonl", "queries.jsonl"])
        raise layout_error(name, root, searched, beir.BEIR_LAYOUT)
    return beir.load_beir(name, d, split, **options)


def _load_beir_generic(root: str, split: str, **options: Any) -> TextSplit:
    return beir.load_beir("beir", root, split, **options)
