"""The registry's family entries (``tfds:<name>`` and any other ``<family>:<member>``): the
prefix is a field of the registry entry, not a special case of the code."""

from __future__ import annotations

import pytest

from crossgap_jax.data import registry
from crossgap_jax.data.types import DatasetInfo, TextSplit


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry for the test to add to."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry


def _toy_member(member: str) -> DatasetInfo:
    def load(root, split, **options):
        texts = [f"{member} {root} {split} {i}" for i in range(4)]
        return TextSplit(f"toy:{member}", split, [f"d{i}" for i in range(4)], texts,
                         labels=[0, 0, 1, 1])

    return DatasetInfo(f"toy:{member}", "text", ("q", "g"), "q", "g", "label", "layout",
                       "a toy family member", load, lambda r: None, root_optional=True)


def test_a_new_family_needs_no_code_change(private_registry):
    reg = private_registry
    reg.register_dataset(DatasetInfo(
        "toy", "text", (), "q", "g", "label", "layout", "a toy family",
        lambda *a, **k: None, lambda r: None, members=_toy_member))
    split = reg.get_dataset("TOY:abc", None)  # family name case-insensitive, default split
    assert split.name == "toy:abc" and split.split == "g"
    assert split.texts[0] == "abc None g 0"  # root_optional: None reaches the reader
    task = reg.get_task("toy:abc", "/somewhere")
    assert (task.name, task.query.split, task.gallery.split) == ("toy:abc", "q", "g")
    assert task.query.texts[1] == "abc /somewhere q 1"
    with pytest.raises(ValueError, match="unknown split 'x'"):
        reg.get_dataset("toy:abc", None, "x")
    with pytest.raises(KeyError, match="family of datasets: name one as toy:<name>"):
        reg.dataset_info("toy")
    assert "toy" not in [e.name for e in reg.list_datasets()]
    assert "toy" not in reg.IMAGE_DATASETS + reg.TEXT_DATASETS


def test_tfds_members_carry_the_default_tasks():
    info = registry.dataset_info("tfds:imdb_reviews")
    assert (info.modality, info.protocol, info.query_split, info.gallery_split) == (
        "text", "class_queries", "queries", "train+test")
    info = registry.dataset_info("tfds:coco_captions")
    assert (info.modality, info.protocol) == ("text", "captions")
    info = registry.dataset_info("tfds:stanford_online_products")
    assert (info.modality, info.query_split, info.gallery_split) == ("image", "test", "test")
    assert info.exclude_self
    info = registry.dataset_info("tfds:not_in_the_table")  # any tfds name: test vs train
    assert (info.query_split, info.gallery_split, info.protocol) == ("test", "train", "label")
    assert info.splits == () and info.root_optional
    with pytest.raises(KeyError, match="tfds:<name>"):
        registry.dataset_info("tfds:")
    with pytest.raises(TypeError, match="tfds datasets take only modality="):
        registry.get_dataset("tfds:dtd", None, "test", crop_queries=True)


def test_unknown_prefix_is_not_a_family():
    with pytest.raises(KeyError, match="unknown dataset 'nofamily:x'"):
        registry.dataset_info("nofamily:x")
    with pytest.raises(KeyError, match="unknown dataset 'caltech101:x'"):
        registry.dataset_info("caltech101:x")  # an ordinary entry has no members


def test_packaged_demo_data_is_found_without_a_root():
    """The demo subset ships in crossgap_jax/assets (docs/datasets.md: 400 test images, 4 per
    class, vs 1,000 train images, 10 per class; 100 held-out captions vs 700)."""
    import os

    from crossgap_jax.data.sources import embedded

    assert os.path.isfile(embedded.DEMO_DATA), embedded.DEMO_DATA
    task = registry.get_task("demo_caltech101")
    assert (task.num_queries, task.num_gallery) == (400, 1000)
    assert sorted(set(task.query.labels.tolist())) == list(range(100))
    img = task.query.open_image(0)
    assert img.mode == "RGB" and min(img.size) == 64
    text = registry.get_task("demo_caltech101_text")
    assert (text.num_queries, text.num_gallery) == (100, 700)
    found = {e.name: e.found for e in registry.list_datasets()}
    assert found["demo_caltech101"] == embedded.DEMO_DATA
