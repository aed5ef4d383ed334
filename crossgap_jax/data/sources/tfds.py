"""tensorflow-datasets backend: ``tfds:<name>`` datasets from a prepared ``data_dir``.

Uses ``tfds.data_source`` (random access over ``array_record`` files), which works
without TensorFlow. Nothing is downloaded (``download=False``): prepare the dataset once
where TensorFlow is available (``tfds build <name> --file_format=array_record``) and
point ``data_dir`` at the result. Images are read as encoded bytes (``SkipDecoding``)
and decoded by the input pipeline with the same PIL code as file datasets.

Items are the zero-padded record index within the split (``"0000042"``), stable for a
given prepared dataset version; the records' own file names, when the dataset has them,
are in ``extra["file_names"]``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from typing import Any

import numpy as np

from crossgap_jax.data.sources.imdb import load_imdb
from crossgap_jax.data.types import DatasetInfo, DatasetLayoutError, ImageSplit, TextSplit

PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class TfdsDefaults:
    """The default retrieval task of a tfds dataset."""

    query_split: str
    gallery_split: str
    protocol: str = "label"  # "label", "captions" (first caption vs rest), "imdb" (2 queries)


# The paper's protocol mapped onto tfds splits; see docs/datasets.md for how these splits
# differ from CoOp's.
TFDS_DEFAULTS: dict[str, TfdsDefaults] = {
    "caltech101": TfdsDefaults("test", "train"),
    "oxford_iiit_pet": TfdsDefaults("test", "train"),
    "oxford_flowers102": TfdsDefaults("test", "train"),
    "dtd": TfdsDefaults("test", "train"),
    "eurosat": TfdsDefaults("train", "train"),
    "eurosat/rgb": TfdsDefaults("train", "train"),
    "food101": TfdsDefaults("validation", "train"),
    "sun397": TfdsDefaults("test", "train"),
    "imagenet2012": TfdsDefaults("validation", "train"),
    "cars196": TfdsDefaults("test", "train"),
    "caltech_birds2011": TfdsDefaults("train+test", "train+test"),
    "stanford_online_products": TfdsDefaults("test", "test"),
    "imdb_reviews": TfdsDefaults("queries", "train+test", "imdb"),
    "coco_captions": TfdsDefaults("test", "test", "captions"),
    "places365_small": TfdsDefaults("validation", "validation"),  # IsoCLIP: val vs val
    "i_naturalist2021": TfdsDefaults("mini", "mini"),  # IsoCLIP: train_mini vs itself
}

LAYOUT = ("<data_dir>/<name>/<config>/<version>/ as written by `tfds build <name> "
          "--file_format=array_record` (root = the tfds data_dir; default: tfds' own)")


def member_info(member: str) -> DatasetInfo:
    """The registry entry of ``tfds:<member>``: its default task from :data:`TFDS_DEFAULTS`
    (unknown names: ``test`` queries vs ``train`` gallery, same-label relevance).

    Raises:
        KeyError: an empty member name.
    """
    if not member:
        raise KeyError("'tfds:' needs a dataset name: tfds:<name>, e.g. tfds:caltech101")
    d = TFDS_DEFAULTS.get(member)
    protocol = "label" if d is None else {"imdb": "class_queries"}.get(d.protocol, d.protocol)
    text = d is not None and d.protocol in ("imdb", "captions")
    return DatasetInfo(
        PREFIX + member, "text" if text else "image", (),
        d.query_split if d else "test", d.gallery_split if d else "train", protocol,  # type: ignore[arg-type]
        LAYOUT, f"tensorflow-datasets {member!r} from a prepared data_dir",
        functools.partial(_load_member, member), locate_family, root_optional=True)


def _load_member(member: str, root: str | os.PathLike | None, split: str,
                 **options: Any) -> ImageSplit | TextSplit:
    unknown = set(options) - {"modality"}
    if unknown:
        raise TypeError(f"tfds datasets take only modality=, got {sorted(unknown)}")
    return load_tfds(PREFIX + member, root, split, **options)


def load_family_root(root: str | os.PathLike | None, split: str, **options: Any) -> None:
    """The ``tfds`` family entry itself reads nothing.

    Raises:
        KeyError: always; the message says to name a member (``tfds:<name>``).
    """
    raise KeyError("'tfds' is a family of datasets: name one as tfds:<name>, e.g. "
                   "tfds:caltech101")


def locate_family(root: str) -> str | None:
    """tfds datasets are not searched for under a data root (they live in a tfds data_dir)."""
    return None


_LABEL_KEYS = ("label", "class_id")
_GROUP_KEYS = ("super_class_id",)
_FILE_KEYS = ("file_name", "image/file_name", "image/filename", "filename", "image/id")
_CLASSNAME_KEYS = ("label_name",)


def import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the tfds: backend needs tensorflow-datasets and array-record "
            "(pip install 'crossgap-jax[tfds]')"
        ) from e
    return tfds


def _str(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8", errors="replace")
    if isinstance(x, np.ndarray) and x.shape == ():
        return _str(x.item())
    return str(x)


def _not_prepared(tfds: Any, name: str, data_dir: str | None, err: Exception) -> Exception:
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        path = str(builder.data_path)
        prepared = builder.is_prepared()
        fmt = str(getattr(builder.info, "file_format", "?"))
    except Exception:  # noqa: BLE001 - only used to improve the message
        path, prepared, fmt = f"{data_dir}/{name}/<version>", False, "?"
    if not prepared:
        return DatasetLayoutError(
            f"tfds dataset {name!r} is not prepared under data_dir={data_dir}.\n"
            f"Looked for: {path}/dataset_info.json and {name.split('/')[0]}-<split>"
            f".array_record-* shards.\nPrepare it once where TensorFlow is installed, e.g.\n"
            f"  tfds build {name} --data_dir {data_dir} --file_format array_record\n"
            f"(tfds said: {type(err).__name__}: {str(err).splitlines()[0]})"
        )
    return DatasetLayoutError(
        f"tfds dataset {name!r} in {path} cannot be read with random access (file format "
        f"{fmt}); re-prepare it with --file_format array_record.\n"
        f"(tfds said: {type(err).__name__}: {str(err).splitlines()[0]})"
    )


def _open_source(tfds: Any, name: str, split: str, data_dir: str | None, decoders: Any) -> Any:
    try:
        return tfds.data_source(
            name, split=split, data_dir=data_dir, download=False, decoders=decoders
        )
    except ValueError as e:
        if "split" in str(e).lower():
            raise ValueError(f"tfds:{name}: {e}") from e
        raise _not_prepared(tfds, name, data_dir, e) from e
    except (NotImplementedError, FileNotFoundError, AssertionError) as e:
        raise _not_prepared(tfds, name, data_dir, e) from e
    except Exception as e:
        if type(e).__name__ == "DatasetNotFoundError":
            raise _not_prepared(tfds, name, data_dir, e) from e
        raise


class TfdsImageReader:
    """:class:`~crossgap_jax.data.types.ImageReader` over one image feature of a data source.

    Returns the encoded bytes when the source skips image decoding, else the decoded
    array (the ``tfds.testing.mock_data`` path). Reads are serialised by a lock (cheap:
    decoding happens outside, in the pipeline's threads).
    """

    def __init__(self, source: Any, image_key: str, label: str):
        self.source, self.image_key, self.label = source, image_key, label
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def read(self, index: int) -> bytes | np.ndarray:
        with self._lock:
            value = self.source[int(index)][self.image_key]
        return value if isinstance(value, (bytes, np.ndarray)) else np.asarray(value)

    def describe(self, index: int) -> str:
        return f"{self.label}[{index}]"


def _skip_image_decoders(tfds: Any, features: Any) -> dict[str, Any]:
    return {
        k: tfds.decode.SkipDecoding()
        for k, f in features.items()
        if isinstance(f, tfds.features.Image)
    }


def _first(keys: tuple[str, ...], features: Any, kind: Any | None = None) -> str | None:
    for k in keys:
        if k in features and (kind is None or isinstance(features[k], kind)):
            return k
    return None


def _read_all(source: Any, n: int, chunk: int = 4096) -> list[dict[str, Any]]:
    """Every record of ``source``, in order (batched ``__getitems__`` where it works)."""
    out: list[dict[str, Any]] = []
    batched = hasattr(source, "__getitems__")
    for start in range(0, n, chunk):
        keys = list(range(start, min(n, start + chunk)))
        if batched:
            try:
                out += list(source.__getitems__(keys))
                continue
            except TypeError:  # tfds.testing.mock_data's source has no batched read
                batched = False
        out += [source[i] for i in keys]
    return out


def load_tfds(
    name: str,
    data_dir: str | os.PathLike | None,
    split: str,
    modality: str | None = None,
) -> ImageSplit | TextSplit:
    """One split of a tfds dataset, mapped to the item/label interface.

    Args:
        name: tfds name, with or without the ``tfds:`` prefix (``"caltech101"``,
            ``"eurosat/rgb"``, ``"imdb_reviews"``, ...).
        data_dir: the tfds data dir holding the prepared dataset.
        split: a tfds split, including tfds split arithmetic (``"train+test"``); for
            ``imdb_reviews`` also ``"queries"`` (the paper's two class descriptions).
        modality: ``"image"`` or ``"text"`` for datasets with both an image and captions
            (``coco_captions``); default: text for the datasets whose protocol in
            :data:`TFDS_DEFAULTS` is ``"captions"``, else image when there is one.

    Returns:
        An :class:`ImageSplit` (with a :class:`TfdsImageReader`) for datasets with an
        ``image`` feature, a :class:`TextSplit` for ``text`` or ``captions`` datasets.

    Raises:
        DatasetLayoutError: the dataset is not prepared (as array_record) in ``data_dir``.
        ValueError: unknown split.
    """
    tfds = import_tfds()
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    full = PREFIX + name
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    if name == "imdb_reviews" and split == "queries":
        return dataclasses.replace(load_imdb("", "queries"), name=full)
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    image_key = (
        "image" if "image" in features and isinstance(features["image"], tfds.features.Image)
        else None
    )
    defaults = TFDS_DEFAULTS.get(name)
    if modality is None:
        modality = "text" if defaults is not None and defaults.protocol == "captions" else None
    if modality == "text":
        image_key = None
    elif modality not in (None, "image"):
        raise ValueError(f"modality must be 'image' or 'text', got {modality!r}")
    # Metadata pass: read every record once with images left encoded (cheap).
    source = _open_source(tfds, name, split, data_dir, _skip_image_decoders(tfds, features))
    if len(source):
        try:
            source[0]
        except Exception as e:  # noqa: BLE001 - SkipDecoding needs TF under mock_data
            if "tensorflow" not in str(e).lower():
                raise
            source = _open_source(tfds, name, split, data_dir, None)
    n = len(source)
    records = _read_all(source, n)
    label_key = _first(_LABEL_KEYS, features, tfds.features.ClassLabel)
    group_key = _first(_GROUP_KEYS, features)
    file_key = _first(_FILE_KEYS, features)
    width = max(7, len(str(n - 1)))
    items = [f"{i:0{width}d}" for i in range(n)]
    labels = np.array([int(r[label_key]) for r in records], np.int64) if label_key else None
    groups = np.array([int(r[group_key]) for r in records], np.int64) if group_key else None
    classnames = None
    if label_key is not None:
        classnames = list(features[label_key].names)
        cn_key = _first(_CLASSNAME_KEYS, features)
        if cn_key is not None and classnames and all(c.isdigit() for c in classnames):
            found = {int(r[label_key]): _str(r[cn_key]) for r in records}
            classnames = [found.get(i, classnames[i]) for i in range(len(classnames))]
    # source_dir: the prepared files, what the data fingerprint reads (data/fingerprint.py)
    extra: dict[str, Any] = {"tfds_name": name, "data_dir": data_dir,
                             "source_dir": os.fspath(builder.data_dir)}
    if file_key is not None:
        extra["file_names"] = [_str(r[file_key]) for r in records]
    if image_key is not None:
        return ImageSplit(
            name=full, split=split, items=items, labels=labels, groups=groups,
            classnames=classnames, reader=TfdsImageReader(source, image_key, f"{full}/{split}"),
            root=data_dir, extra=extra,
        )
    if "text" in features and isinstance(features["text"], tfds.features.Text):
        return TextSplit(
            name=full, split=split, items=items, texts=[_str(r["text"]) for r in records],
            labels=labels, classnames=classnames, root=data_dir, extra=extra,
        )
    if "captions" in features:  # coco_captions: a sequence of {id, text} per image
        t_items, texts, g = [], [], []
        for i, r in enumerate(records):
            caps = r["captions"]["text"] if isinstance(r["captions"], dict) else [
                c["text"] for c in r["captions"]
            ]
            for k, c in enumerate(caps):
                t_items.append(f"{items[i]}#{k}")
                texts.append(_str(c))
                g.append(i)
        return TextSplit(name=full, split=split, items=t_items, texts=texts,
                         groups=np.array(g, np.int64), root=data_dir, extra=extra)
    raise ValueError(f"{full}: no image, text or captions feature in {list(features)}")
