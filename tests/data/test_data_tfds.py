"""The tfds: backend, with tfds.testing.mock_data and a tiny real array_record dataset.

No network and no TensorFlow: ``tfds.data_source`` reads array_record files directly.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

import crossgap_jax.data as cgd
from crossgap_jax.data import DatasetLayoutError, ImageBatchLoader, ImageSplit, TextSplit

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

logging.getLogger("absl").setLevel(logging.ERROR)


@pytest.fixture
def mock3():
    with tfds.testing.mock_data(num_examples=3):
        yield


@pytest.mark.parametrize("name,split,ncls", [
    ("caltech101", "test", 102),
    ("oxford_iiit_pet", "test", 37),
    ("oxford_flowers102", "test", 102),
    ("dtd", "test", 47),
    ("eurosat/rgb", "train", 10),
    ("food101", "validation", 101),
    ("sun397", "test", 397),
    ("imagenet2012", "validation", 1000),
    # (caltech_birds2011 and cars196 are not mockable: mock_data draws invalid bboxes)
])
def test_mock_image_datasets(mock3, tmp_path, name, split, ncls):
    s = cgd.get_dataset(f"tfds:{name}", tmp_path, split)
    assert isinstance(s, ImageSplit) and s.name == f"tfds:{name}" and len(s) == 3
    assert s.items == ["0000000", "0000001", "0000002"]
    assert s.labels.shape == (3,) and len(s.classnames) == ncls
    assert s.open_image(0).mode == "RGB"
    batches = list(ImageBatchLoader(s, 2, image_size=16))
    assert [b.mask.tolist() for b in batches] == [[True, True], [True, False]]
    assert batches[0].images.shape == (2, 16, 16, 3)


def test_mock_sop_labels_and_groups(mock3, tmp_path):
    s = cgd.get_dataset("tfds:stanford_online_products", tmp_path, "test")
    assert s.labels is not None and s.groups is not None
    # mock labels are random over 22,634 classes: the 3-item all-vs-all task has (almost
    # surely) no query with a positive, so it is refused unless the check is turned off
    task = cgd.get_task("tfds:stanford_online_products", tmp_path, check=False)
    assert task.exclude_self and task.query is task.gallery


def test_mock_text_and_tasks(mock3, tmp_path):
    s = cgd.get_dataset("tfds:imdb_reviews", tmp_path, "test")
    assert isinstance(s, TextSplit) and len(s) == 3 and all(isinstance(t, str) for t in s.texts)
    assert s.classnames == ["neg", "pos"]
    task = cgd.get_task("tfds:imdb_reviews", tmp_path)
    assert task.query.texts == list(cgd.IMDB_QUERIES) and task.gallery.split == "train+test"
    task = cgd.get_task("tfds:caltech101", tmp_path)
    assert (task.query.split, task.gallery.split) == ("test", "train")


def test_unprepared_data_dir_message(tmp_path):
    with pytest.raises(DatasetLayoutError) as e:
        cgd.get_dataset("tfds:caltech101", tmp_path, "test")
    msg = str(e.value)
    assert "not prepared" in msg and str(tmp_path) in msg and "array_record" in msg


class CrossgapTinyImages(tfds.core.GeneratorBasedBuilder):
    """Four tiny JPEGs, two classes: a real prepared array_record dataset for the tests."""

    VERSION = tfds.core.Version("1.0.0")
    image_dir: str = ""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=2),  # names "0", "1" as CUB's
            "label_name": tfds.features.Text(),
            "file_name": tfds.features.Text(),
        }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(4)), "test": self._generate_examples([4])}

    def _generate_examples(self, ids):
        for i in ids:
            yield i, {"image": os.path.join(self.image_dir, f"{i}.jpg"), "label": i % 2,
                      "label_name": ["cat", "dog"][i % 2], "file_name": f"{i}.jpg"}


@pytest.fixture(scope="module")
def tiny_data_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("tfds_tiny")
    img = base / "src"
    img.mkdir()
    for i in range(5):
        arr = np.random.default_rng(i).integers(0, 255, (20 + i, 30, 3), np.uint8)
        Image.fromarray(arr).save(img / f"{i}.jpg", quality=95)
    CrossgapTinyImages.image_dir = str(img)
    builder = CrossgapTinyImages(data_dir=str(base / "data"), file_format="array_record")
    builder.download_and_prepare()
    return base


def test_real_array_record_dataset(tiny_data_dir):
    dd = tiny_data_dir / "data"
    s = cgd.get_dataset("tfds:crossgap_tiny_images", dd, "train")
    assert len(s) == 4 and s.classnames == ["cat", "dog"]  # from label_name
    names = s.extra["file_names"]
    assert sorted(names) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    # Labels match the records (the prepared order is tfds' own shuffle).
    assert s.labels.tolist() == [int(n[0]) % 2 for n in names]
    # Images come as encoded bytes (SkipDecoding) and decode to the source pixels.
    raw = s.reader.read(0)
    assert isinstance(raw, bytes) and raw[:2] == b"\xff\xd8"
    src = Image.open(tiny_data_dir / "src" / names[0]).convert("RGB")
    np.testing.assert_array_equal(np.asarray(s.open_image(0)), np.asarray(src))
    batches = list(ImageBatchLoader(s, 3, image_size=8, num_threads=2))
    assert [int(b.mask.sum()) for b in batches] == [3, 1]
    task = cgd.get_task("tfds:crossgap_tiny_images", dd)  # unknown name: test vs train
    assert len(task.query) == 1 and len(task.gallery) == 4 and not task.exclude_self
    sub = s.subset([3, 1])
    np.testing.assert_array_equal(np.asarray(sub.open_image(1)), np.asarray(s.open_image(1)))
    with pytest.raises(ValueError, match="split"):
        cgd.get_dataset("tfds:crossgap_tiny_images", dd, "validation")
    listed = {e.name: e.found for e in cgd.list_datasets(dd, tfds_data_dir=dd)}
    assert listed["tfds:caltech101"] is None


class CrossgapTinyCaptions(tfds.core.GeneratorBasedBuilder):
    """Two images with 2 and 3 captions: the coco_captions feature structure, in small."""

    VERSION = tfds.core.Version("1.0.0")
    image_dir: str = ""

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "captions": tfds.features.Sequence({"id": np.int64, "text": tfds.features.Text()}),
        }))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, n in ((0, 2), (1, 3)):
            caps = {"id": [10 * i + k for k in range(n)],
                    "text": [f"image {i} caption {k}" for k in range(n)]}
            yield i, {"image": os.path.join(self.image_dir, f"{i}.jpg"), "captions": caps}


def test_real_captions_dataset(tiny_data_dir):
    CrossgapTinyCaptions.image_dir = str(tiny_data_dir / "src")
    dd = tiny_data_dir / "data"
    CrossgapTinyCaptions(data_dir=str(dd), file_format="array_record").download_and_prepare()
    images = cgd.get_dataset("tfds:crossgap_tiny_captions", dd, "test")
    assert isinstance(images, ImageSplit) and len(images) == 2
    caps = cgd.get_dataset("tfds:crossgap_tiny_captions", dd, "test", modality="text")
    assert isinstance(caps, TextSplit) and len(caps) == 5
    n_per = np.bincount(caps.groups).tolist()
    assert sorted(n_per) == [2, 3]
    first = caps.groups.tolist().index(0)
    assert caps.items[first].endswith("#0") and "caption 0" in caps.texts[first]
    query, gallery = cgd.first_caption_split(caps)
    assert len(query) == 2 and len(gallery) == 3
    with pytest.raises(ValueError, match="modality"):
        cgd.get_dataset("tfds:crossgap_tiny_captions", dd, "test", modality="audio")


def test_fingerprint_of_a_prepared_dataset(tiny_data_dir):
    """tfds splits are fingerprinted by the files of the prepared version folder: a touched
    file changes the stat digest (not the content digest), for every item at once."""
    s = cgd.get_dataset("tfds:crossgap_tiny_images", tiny_data_dir / "data", "train")
    src = s.extra["source_dir"]
    assert os.path.isdir(src) and src.startswith(str(tiny_data_dir / "data"))
    fp, sha = cgd.split_fingerprint(s), cgd.split_fingerprint(s, verify=True)
    assert (fp.root, fp.mode, sha.mode) == (os.path.abspath(src), "stat", "sha256")
    assert len(set(fp.item_keys)) == 1 and len(fp.item_keys) == 4
    some = sorted(os.path.join(d, f) for d, _, fs in os.walk(src) for f in fs)[0]
    st = os.stat(some)
    os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert cgd.split_fingerprint(s).digest != fp.digest
        assert cgd.split_fingerprint(s, verify=True) == sha
    finally:
        os.utime(some, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cgd.split_fingerprint(s) == fp
