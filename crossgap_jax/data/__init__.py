"""Datasets of the paper: registry, readers of the standard layouts, tfds backend, pipeline.

Data flows one way (data -> models -> inversion -> retrieval): nothing here imports the
model, inversion or CLI layers, except the CLIP preprocessing function.

Main entry points:

* :func:`get_dataset` / :func:`get_task` / :func:`list_datasets`: datasets by the
  authors' names (``caltech101``, ``coco_text``, ``nanoscifact``, ``tfds:dtd``, ...).
* :class:`ImageSplit`, :class:`TextSplit`, :class:`RetrievalTask`: the data model.
* :class:`ImageBatchLoader`: decode + preprocess into fixed-shape masked batches.

See ``docs/datasets.md`` for the expected layouts and protocols.
"""

from crossgap_jax.data._fs import ENV_VAR
from crossgap_jax.data.core import (
    DataFileError,
    DatasetLayoutError,
    DegenerateTaskError,
    ImageDecodeError,
    ImageReader,
    ImageSplit,
    MissingFilesError,
    RetrievalTask,
    Split,
    TextSplit,
    open_image,
)
from crossgap_jax.data.pipeline import (
    ImageBatch,
    ImageBatchLoader,
    TextBatch,
    iterate_image_batches,
    iterate_text_batches,
    num_batches_per_process,
    shard_indices,
)
from crossgap_jax.data.registry import (
    IMAGE_DATASETS,
    TEXT_DATASETS,
    DatasetEntry,
    DatasetInfo,
    dataset_info,
    get_dataset,
    get_task,
    list_datasets,
    register_dataset,
)
from crossgap_jax.data.texts import (
    IMDB_QUERIES,
    NEWSGROUP_DESCRIPTIONS,
    first_caption_split,
    load_text_replacements,
)
from crossgap_jax.data.tfds_backend import TFDS_DEFAULTS, load_tfds

__all__ = [
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
    "RetrievalTask",
    "Split",
    "TextBatch",
    "TextSplit",
    "dataset_info",
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
]
