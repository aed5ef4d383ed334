"""Datasets of the paper: registry, one reader per data source, image decoding, batch loader.

The bottom layer (data -> models -> inversion/baselines -> retrieval -> pipeline -> cli,
asserted by ``tests/test_layering.py``): nothing here imports another layer of the
package. Image decoding and CLIP preprocessing live here (:mod:`.decoding`,
:mod:`.preprocess`); the model layer imports them from here.

Modules: :mod:`.types` (splits, errors), :mod:`.task` (retrieval task), :mod:`.decoding`,
:mod:`.preprocess`, :mod:`.loader` (batches), :mod:`.fingerprint` (data identity of a
split, for caches), :mod:`.registry`, :mod:`.sources` (one module
per data source), :mod:`.authors_assets`.

Main entry points:

* :func:`get_dataset` / :func:`get_task` / :func:`list_datasets`: datasets by the
  authors' names (``caltech101``, ``coco_text``, ``nanoscifact``, ``tfds:dtd``, ...).
* :class:`ImageSplit`, :class:`TextSplit`, :class:`RetrievalTask`: the data model.
* :class:`ImageBatchLoader`: decode + preprocess into fixed-shape masked batches.

See ``docs/datasets.md`` for the expected layouts and protocols.
"""

from crossgap_jax.data._fs import ENV_VAR, open_text, resolve_root
from crossgap_jax.data.augment import augmented_view
from crossgap_jax.data.authors_assets import (
    apply_authors_assets,
    apply_authors_assets_to_split,
    check_authors_assets,
    find_summaries_dir,
)
from crossgap_jax.data.decoding import ImageDecodeError, open_image
from crossgap_jax.data.fingerprint import SplitFingerprint, split_fingerprint
from crossgap_jax.data.loader import (
    ImageBatch,
    ImageBatchLoader,
    TextBatch,
    iterate_image_batches,
    iterate_text_batches,
    num_batches_per_process,
    pad_rows,
    shard_indices,
)
from crossgap_jax.data.preprocess import (
    OPENAI_MEAN,
    OPENAI_STD,
    center_crop,
    preprocess_images,
    resize_shortest_side,
)
from crossgap_jax.data.registry import (
    IMAGE_DATASETS,
    TEXT_DATASETS,
    DatasetEntry,
    DatasetInfo,
    check_options,
    dataset_info,
    get_dataset,
    get_task,
    list_datasets,
    parse_dataset_name,
    register_dataset,
)
from crossgap_jax.data.sources.captions import first_caption_split
from crossgap_jax.data.sources.embedded import (
    ASSET_DIR,
    CARD_NAME,
    DEMO_DATA,
    DEMO_DATA_LICENSE,
    IMAGE_NAME,
    TEXT_NAME,
)
from crossgap_jax.data.sources.imagefolder import imagefolder_splits
from crossgap_jax.data.sources.imdb import IMDB_QUERIES
from crossgap_jax.data.sources.jsonl import load_text_replacements
from crossgap_jax.data.sources.newsgroups import NEWSGROUP_DESCRIPTIONS
from crossgap_jax.data.sources.tfds import PREFIX, TFDS_DEFAULTS, import_tfds, load_tfds
from crossgap_jax.data.task import QRELS_MISSING, QrelsAudit, RetrievalTask, audit_qrels
from crossgap_jax.data.types import (
    DataFileError,
    DatasetLayoutError,
    DegenerateTaskError,
    ImageReader,
    ImageSplit,
    MissingFilesError,
    Split,
    TextSplit,
)

__all__ = [
    "augmented_view",
    "imagefolder_splits",
    "ASSET_DIR", "CARD_NAME", "DEMO_DATA", "DEMO_DATA_LICENSE", "IMAGE_NAME", "OPENAI_MEAN",
    "OPENAI_STD", "PREFIX", "TEXT_NAME", "apply_authors_assets", "apply_authors_assets_to_split",
    "center_crop", "pad_rows", "preprocess_images", "check_authors_assets", "find_summaries_dir",
    "resize_shortest_side",
    "import_tfds", "resolve_root",
    "open_text",
    "ENV_VAR",
    "IMAGE_DATASETS",
    "IMDB_QUERIES",
    "NEWSGROUP_DESCRIPTIONS",
    "TEXT_DATASETS",
    "TFDS_DEFAULTS",
    "DatasetEntry",
    "DataFileError",
    "DatasetInfo",
    "DatasetLayoutError",
    "DegenerateTaskError",
    "ImageBatch",
    "ImageBatchLoader",
    "ImageDecodeError",
    "ImageReader",
    "ImageSplit",
    "MissingFilesError",
    "QRELS_MISSING",
    "QrelsAudit",
    "RetrievalTask",
    "audit_qrels",
    "Split",
    "SplitFingerprint",
    "TextBatch",
    "TextSplit",
    "dataset_info",
    "check_options",
    "parse_dataset_name",
    "first_caption_split",
    "get_dataset",
    "get_task",
    "iterate_image_batches",
    "iterate_text_batches",
    "list_datasets",
    "load_text_replacements",
    "load_tfds",
    "num_batches_per_process",
    "open_image",
    "register_dataset",
    "shard_indices",
    "split_fingerprint",
]
