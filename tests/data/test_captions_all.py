"""Every caption of an image is kept, as the authors do: query = first caption, gallery =
all the others (some COCO images have 6 or 7 captions in the Karpathy json)."""

from __future__ import annotations

import json
import os

import crossgap_jax.data as cgd


def _write(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))


def _expected(images):
    """Brute force from the json: (query texts, gallery texts, gallery image index)."""
    q, g, gi = [], [], []
    for i, caps in enumerate(images):
        q.append(caps[0])
        g += caps[1:]
        gi += [i] * (len(caps) - 1)
    return q, g, gi


def _check(task, caps):
    q, g, gi = _expected(caps)
    assert task.query.texts == q and task.gallery.texts == g
    for i in range(len(caps)):
        assert task.positives(i).tolist() == [j for j, x in enumerate(gi) if x == i]


def test_karpathy_coco_keeps_7_captions(tmp_path):
    counts = {"test": [7, 5, 6], "val": [5], "train": [5]}
    images, caps_test = [], []
    for split, ns in counts.items():
        for n in ns:
            k = len(images)
            caps = [f"image {k} caption {c}" for c in range(n)]
            images.append({"filename": f"COCO_val2014_{k:012d}.jpg", "split": split,
                           "sentences": [{"raw": f" {c} "} for c in caps]})
            if split == "test":
                caps_test.append(caps)
    _write(str(tmp_path / "coco" / "dataset_coco.json"), {"images": images})
    split = cgd.get_dataset("coco_text", tmp_path, "test")
    assert len(split) == 18
    assert [it for it in split.items if it.startswith("COCO_val2014_000000000000#")] == [
        f"COCO_val2014_000000000000#{c}" for c in range(7)]
    task = cgd.get_task("coco_text", tmp_path)
    _check(task, caps_test)
    assert len(task.gallery) == 6 + 4 + 5
    # An explicit cap still works (e.g. the 5-per-image protocol of other papers).
    assert len(cgd.get_dataset("coco_text", tmp_path, "test", captions_per_image=5)) == 15


def test_flickr_karpathy_and_nocaps_keep_all(tmp_path):
    caps = [[f"f{i}.{c}" for c in range(n)] for i, n in enumerate([5, 6])]
    _write(str(tmp_path / "flickr30k" / "dataset_flickr30k.json"),
           {"images": [{"filename": f"{i}.jpg", "split": "val",
                        "sentences": [{"raw": c} for c in cs]} for i, cs in enumerate(caps)]})
    _check(cgd.get_task("flickr30k_text", tmp_path), caps)
    # NoCaps (COCO format): captions ordered by annotation id; 11 for one image.
    ncaps = {0: [f"n0.{c}" for c in range(11)], 1: [f"n1.{c}" for c in range(10)]}
    anns, aid = [], 0
    for img in (1, 0):
        for c in ncaps[img][::-1]:  # written in reverse: ids decide the order
            anns.append({"image_id": img, "id": 1000 - aid, "caption": c})
            aid += 1
    _write(str(tmp_path / "nocaps" / "nocaps_val_4500_captions.json"),
           {"images": [{"id": 0, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
            "annotations": anns})
    _check(cgd.get_task("nocaps_text", tmp_path), [ncaps[0], ncaps[1]])


def test_line_files_read_5_lines_per_image(tmp_path):
    lines = [f"img {i // 5} cap {i % 5}" for i in range(10)]
    _write(str(tmp_path / "coco_karpathy" / "test5k_captions.txt"), "\n".join(lines) + "\n")
    task = cgd.get_task("coco_text", tmp_path)
    _check(task, [lines[:5], lines[5:]])
