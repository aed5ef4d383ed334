"""Which weights a run loads: pretrained aliases of shipped files, a checkpoint path or hub
id given on the command line, else the preset's ``checkpoint`` / ``pretrained``."""

from __future__ import annotations

import os
import re
from typing import Any

from crossgap_jax.fileio import sha256_file
from crossgap_jax.models import CLIP, detect_family, native_config
from crossgap_jax.pipeline.presets import DEMO_CHECKPOINT


def claimed_by_family(source: Any) -> bool:
    """Whether a non-CLIP family recognises ``source`` (``loader.detect_family``)."""
    return isinstance(source, str) and detect_family(source) != "clip"


def pretrained_aliases() -> dict[str, str]:
    """Pretrained names that resolve to a shipped file: ``{"demo": <the demo checkpoint>}``
    (:data:`crossgap_jax.pipeline.presets.DEMO_CHECKPOINT`, whatever model that file
    holds)."""
    return {"demo": DEMO_CHECKPOINT}


def written_as_path(source: str) -> bool:
    """Whether ``source`` is spelled as a local path: ``./x``, ``../x``, ``~/x``, an absolute
    path, one with a folder separator or a file extension. A bare name (``demo``) is a
    pretrained name even when a file or folder of that name exists in the working
    directory; write ``./demo`` to load that one."""
    return (source.startswith((".", "/", "~")) or os.sep in source or "/" in source
            or bool(os.path.splitext(source)[1]))


def resolve_source(pretrained: str | None, checkpoint: str | None = None
                   ) -> tuple[str | None, Any]:
    """The weights a run loads, and their architecture when the file states it.

    ``checkpoint`` (a path / hub id) wins over the preset's ``pretrained`` (a tag or source);
    a pretrained alias (``"demo"``) becomes its file, also when a same-named file or folder
    exists here, unless written as a path (:func:`written_as_path`: ``./demo``).

    Returns:
        ``(source, config)``: ``config`` is the architecture stored in a native file
        (:func:`~crossgap_jax.models.checkpoint.native.native_config`), else None.

    Raises:
        FileNotFoundError: an alias whose file is missing.
    """
    source = checkpoint or pretrained
    aliases = pretrained_aliases()
    if source in aliases and not written_as_path(source):
        source = aliases[source]
        if not os.path.isfile(source):
            raise FileNotFoundError(f"the demo checkpoint {source} is missing; rebuild it "
                                    "with: python -m crossgap_jax.train.demo_caltech")
    if isinstance(source, str) and os.path.exists(os.path.expanduser(source)):
        return source, native_config(os.path.expanduser(source))
    return source, None


def is_tag(source: str | None) -> bool:
    """Whether ``source`` reads as a pretrained tag (``openai``, ``webli``) rather than a path."""
    return (isinstance(source, str) and re.fullmatch(r"[a-z0-9_]+", source) is not None
            and (source in pretrained_aliases() or not os.path.exists(source)))


def checkpoint_sha256(clip: CLIP) -> str | None:
    """sha256 of the checkpoint file a bundle was loaded from (verified / hub-cache value
    when the loader has it, else hashed once and kept in ``clip.info``); None for several
    files or none."""
    info = clip.info
    if info.get("checkpoint_sha256") is None:
        sha = info.get("sha256")
        path = info.get("path")
        if sha is None and isinstance(path, str) and os.path.isfile(path):
            sha = sha256_file(path)
        info["checkpoint_sha256"] = sha
    return info["checkpoint_sha256"]
