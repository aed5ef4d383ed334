"""The exceptions of checkpoint loading (one place, imported by every loader module).

- :class:`CheckpointError` (a ``ValueError``): a file is unreadable or does not fit the
  requested architecture; the message names the file / tensors and the fix.
- :class:`CheckpointNotFoundError` (also a ``FileNotFoundError``): weights are not local
  and cannot be fetched; the message says what to fetch and where to put it.
- :class:`ChecksumError`: downloaded bytes differ from the published sha256.
- :class:`CheckpointLayoutError`: the tensors were read, but their names fit no layout of
  the reader (another family's file, a file taken out of its model folder).
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: the message names the tensors involved."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Weights are not available locally and cannot be fetched (offline, no network, or
    no such file). The message says what to fetch and where to put it.

    Attributes:
        url: the download URL, when there is one.
        repo_id: the hub repo, when the source is the Hugging Face hub.
        filenames: the files to fetch from ``repo_id``.
        target: where the file is expected (cache path), when known.
    """

    def __init__(self, message: str, *, url: str | None = None, repo_id: str | None = None,
                 filenames: tuple[str, ...] = (), target: str | None = None):
        super().__init__(message)
        self.url, self.repo_id, self.filenames, self.target = url, repo_id, filenames, target


class ChecksumError(CheckpointError):
    """A downloaded file's sha256 differs from the published one."""


class CheckpointLayoutError(CheckpointError):
    """A weights file was read, but its tensor names fit no layout the family's reader knows
    (the loader adds which other family recognises the file or its folder)."""
