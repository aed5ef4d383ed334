"""Pretrained weights by name: every (architecture, tag) -> source table of the package.

- OpenAI's CLIP releases (URL; the sha256 of each file is the second-to-last URL
  component), reached with tag ``"openai"`` or no tag for OpenAI's own names;
- open_clip's releases the paper uses (``"hf-hub:<repo>"``), by open_clip tag;
- SigLIP (transformers ``SiglipModel`` hub repos) and SLIP (release URLs).

Model names follow our registry (``"ViT-B/32"``, ``"ViT-L-14"``, ``"SigLIP-ViT-B-16"``);
open_clip's names for the same architectures (``"ViT-B-16-SigLIP"``) are aliases
declared by the family (its model module's ``ALIASES``;
:func:`crossgap_jax.models.configs.list_aliases`).
"""

from __future__ import annotations

import os
import re

from crossgap_jax.models.checkpoint.errors import CheckpointError
from crossgap_jax.models.checkpoint.hub import default_cache_dir, download_url, verified_sha256

# OpenAI's release files; the sha256 of each file is the second-to-last URL component.
_OPENAI_BASE = "https://openaipublic.azureedge.net/clip/models"
OPENAI_RELEASES: dict[str, str] = {
    "ViT-B/32": f"{_OPENAI_BASE}/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    "/ViT-B-32.pt",
    "ViT-B/16": f"{_OPENAI_BASE}/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
    "/ViT-B-16.pt",
    "ViT-L/14": f"{_OPENAI_BASE}/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    "/ViT-L-14.pt",
    "ViT-L/14@336px": f"{_OPENAI_BASE}/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08"
    "641f02/ViT-L-14-336px.pt",
}

# open_clip architecture names whose "openai" tag means OpenAI's weights (quick_gelu).
OPEN_CLIP_TO_OPENAI = {
    "ViT-B-32": "ViT-B/32",
    "ViT-B-32-quickgelu": "ViT-B/32",
    "ViT-B-16": "ViT-B/16",
    "ViT-L-14": "ViT-L/14",
    "ViT-L-14-quickgelu": "ViT-L/14",
}

# (architecture, pretrained tag) -> source, for the open_clip weights the paper uses.
PRETRAINED: dict[tuple[str, str], str] = {
    ("ViT-B-32", "datacomp_xl_s13b_b90k"): "hf-hub:laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
    ("ViT-L-14", "datacomp_xl_s13b_b90k"): "hf-hub:laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K",
    ("ViT-B-32", "laion2b_s34b_b79k"): "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-L-14", "laion2b_s32b_b82k"): "hf-hub:laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
}

# SigLIP tags -> Hugging Face hub repos (transformers SiglipModel layout). open_clip's
# ``ViT-B-16-SigLIP`` / ``webli`` is the same release.
SIGLIP_PRETRAINED: dict[tuple[str, str], str] = {
    ("SigLIP-ViT-B-16", "webli"): "google/siglip-base-patch16-224",
    ("SigLIP2-ViT-B-16", "webli"): "google/siglip2-base-patch16-224",
}
SIGLIP_DEFAULT_TAG = "webli"

# SLIP tags -> release URLs (SLIP's README; 100-epoch YFCC15M models).
SLIP_PRETRAINED: dict[tuple[str, str], str] = {
    ("SLIP-ViT-S-16", "slip"): "https://dl.fbaipublicfiles.com/slip/slip_small_100ep.pt",
    ("SLIP-ViT-B-16", "slip"): "https://dl.fbaipublicfiles.com/slip/slip_base_100ep.pt",
    ("SLIP-ViT-L-16", "slip"): "https://dl.fbaipublicfiles.com/slip/slip_large_100ep.pt",
}
SLIP_DEFAULT_TAG = "slip"

# PE-Core tags -> open_clip hub repos (open_clip ``pretrained.py``: ``PE-Core-B-16`` /
# ``meta``, converted by timm from facebook/PE-Core-B16-224).
PE_CORE_PRETRAINED: dict[tuple[str, str], str] = {
    ("PE-Core-B-16", "meta"): "hf-hub:timm/PE-Core-B-16",
}
PE_CORE_DEFAULT_TAG = "meta"


def list_pretrained() -> list[tuple[str, str]]:
    """``(architecture, tag)`` pairs the CLIP loader resolves by itself (OpenAI and
    open_clip releases; SigLIP / SLIP tags are in :data:`SIGLIP_PRETRAINED` /
    :data:`SLIP_PRETRAINED`)."""
    pairs = [(arch, "openai") for arch in OPENAI_RELEASES]
    pairs += [(arch, "openai") for arch in OPEN_CLIP_TO_OPENAI]
    return pairs + list(PRETRAINED)


def openai_release(arch: str) -> tuple[str, str]:
    """``(url, sha256)`` of OpenAI's release for ``arch`` (OpenAI or open_clip spelling)."""
    arch = OPEN_CLIP_TO_OPENAI.get(arch, arch)
    if arch not in OPENAI_RELEASES:
        raise CheckpointError(
            f"OpenAI released no weights for {arch!r}; releases: {', '.join(OPENAI_RELEASES)}"
        )
    url = OPENAI_RELEASES[arch]
    return url, url.split("/")[-2]


def fetch_openai(arch: str, cache_dir: str | None = None, *, progress: bool = True) -> str:
    """Local path of OpenAI's release for ``arch``, downloading it into ``cache_dir`` if
    needed (default :func:`default_cache_dir`). A copy with the right sha256 in OpenAI's own
    cache (``~/.cache/clip``) is used as is."""
    url, sha = openai_release(arch)
    filename = url.split("/")[-1]
    cache_dir = os.path.expanduser(cache_dir) if cache_dir else default_cache_dir()
    dest = os.path.join(cache_dir, filename)
    if not os.path.isfile(dest):
        other = os.path.join(os.path.expanduser("~"), ".cache", "clip", filename)
        if os.path.isfile(other) and verified_sha256(other, sha):
            return other
    return download_url(url, dest, sha, progress=progress)



def resolve_clip_tag(arch: str, checkpoint: str | None) -> tuple[str, str] | None:
    """``(kind, value)`` for a pretrained tag: ``("openai", arch)`` or ``("source", hub)``.
    None when ``checkpoint`` is a path / hub id to read as is."""
    if checkpoint is None or checkpoint == "openai":
        # No checkpoint: OpenAI's release only for OpenAI's own names ("ViT-B/32");
        # open_clip names ("ViT-B-32") have several releases, so the tag is required.
        if arch in OPENAI_RELEASES or (checkpoint == "openai" and arch in OPEN_CLIP_TO_OPENAI):
            return "openai", arch
        tags = [t for a, t in list_pretrained() if a == arch]
        if checkpoint == "openai":
            raise CheckpointError(f"OpenAI released no weights for {arch!r}; OpenAI releases: "
                                  f"{', '.join(OPENAI_RELEASES)}")
        raise CheckpointError(
            f"no default checkpoint for architecture {arch!r}: pass checkpoint= a file, a "
            f"directory, a hub id" + (f", or a pretrained tag ({', '.join(tags)})" if tags else
                                       " (use create_clip for random weights)"))
    if (arch, checkpoint) in PRETRAINED:
        return "source", PRETRAINED[(arch, checkpoint)]
    if re.fullmatch(r"[a-z0-9_]+", checkpoint) and not os.path.exists(checkpoint):
        tags = [t for a, t in list_pretrained() if a == arch]
        archs = [a for a, t in PRETRAINED if t == checkpoint]
        where = (f"it exists for {', '.join(archs)}, not {arch!r}" if archs
                 else "not a known tag, file or directory")
        raise CheckpointError(f"pretrained tag {checkpoint!r}: {where}. Tags for {arch!r}: "
                              f"{', '.join(tags) or '(none)'}")
    return None




def resolve_family_tag(table: dict[tuple[str, str], str], arch: str, tag: str | None,
                       default_tag: str, family: str) -> str | None:
    """The source of ``(arch, tag)`` in a family's table (``tag=None``: ``default_tag``);
    None when ``tag`` is not a tag of the table (a path / hub id to read as is).

    Raises:
        CheckpointError: no tag given and the architecture has no release.
    """
    if tag is None:
        if (arch, default_tag) not in table:
            raise CheckpointError(f"no released {family} weights for {arch!r}; pass "
                                  f"checkpoint= (pretrained=) a file, a directory or a hub id")
        return table[(arch, default_tag)]
    return table.get((arch, tag))
