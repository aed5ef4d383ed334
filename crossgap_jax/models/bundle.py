"""The user-facing CLIP bundle: config + params + tokenizer + preprocessing + jitted encoders."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crossgap_jax.data import pad_rows, preprocess_images
from crossgap_jax.models.checkpoint.fingerprint import params_fingerprint
from crossgap_jax.models.checkpoint.loader import load
from crossgap_jax.models.clip.tokenizer import CLIPTokenizer
from crossgap_jax.models.configs import CLIPConfig, get_config
from crossgap_jax.models.families import family_of, require_text_tower
from crossgap_jax.models.inputs import check_text_inputs

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "fp32": jnp.float32,
           "bf16": jnp.bfloat16}


def resolve_dtype(dtype: Any) -> Any:
    """``"float32"``/``"bfloat16"`` (or a jnp dtype) -> jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unknown compute dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    return dtype


@functools.partial(jax.jit, static_argnames=("config", "dtype", "project"))
def _encode_image_jit(params, pixels, *, config, dtype, project=True):
    family = family_of(config)
    fn = family.encode_image if project else family.encode_image_preproj
    return fn(params, pixels, config=config, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("config", "dtype", "project"))
def _encode_text_jit(params, ids, eot, *, config, dtype, project=True):
    family = family_of(config)
    fn = family.encode_text if project else family.encode_text_preproj
    return fn(params, ids, eot, config=config, dtype=dtype)


TEXT_LENGTH_BUCKET = 16  # causal text batches are cut to a multiple of this many positions


def trim_causal_text(ids: np.ndarray, eot_index: np.ndarray) -> list[np.ndarray]:
    """Cut a batch of ids after its last EOT, rounded up to a multiple of
    :data:`TEXT_LENGTH_BUCKET` (at most the context length; a few compiled shapes).

    Exact for causal text towers (CLIP, open_clip, SLIP): the causal mask means positions
    after a row's EOT never influence its feature, and the positional embeddings of the
    kept positions are the same. A caption of ~15 tokens then costs 16 positions, not 77.
    """
    need = int(np.max(eot_index)) + 1 if len(eot_index) else 1
    length = min(ids.shape[1], -(-need // TEXT_LENGTH_BUCKET) * TEXT_LENGTH_BUCKET)
    return [ids[:, :length], eot_index]


def _batched(fn, arrays: Sequence[np.ndarray], batch_size: int, desc: str,
             progress: bool | None, out_dim: int, trim=None) -> np.ndarray:
    """Run ``fn`` over fixed-size padded batches (one compilation per shape), concatenate
    the rows; ``trim(*chunk) -> chunk`` may shorten a batch's other axes first."""
    n = len(arrays[0])
    if progress is None:
        progress = n > 4 * batch_size
    outs = []
    for start in tqdm(range(0, n, batch_size), desc=desc, unit="batch", disable=not progress):
        chunk = [a[start : start + batch_size] for a in arrays]
        m = len(chunk[0])
        if m < batch_size and n > batch_size:  # pad the ragged last batch: no recompile
            chunk = [pad_rows(c, batch_size) for c in chunk]
        if trim is not None:
            chunk = trim(*chunk)
        outs.append(np.asarray(fn(*chunk))[:m])
    return np.concatenate(outs) if outs else np.zeros((0, out_dim), np.float32)


@dataclasses.dataclass
class CLIP:
    """A loaded CLIP model.

    Attributes:
        config: architecture (:class:`CLIPConfig`); hashable, used as a static jit arg.
        params: float32 params pytree (OpenAI-mirroring names).
        dtype: compute dtype (``jnp.float32`` or ``jnp.bfloat16``).
        info: where the weights came from (source, format, sha256, ...).

    The pure functions for jit/vmap use are :attr:`fns` (``embed_tokens``,
    ``encode_text_embeddings``, ``encode_text``, ``embed_image_patches``,
    ``encode_image_tokens``, ``encode_image``), each with ``config``/``dtype`` bound.

    ``tokenizer_file``: the tokenizer model for families whose vocabulary is not shipped
    with this package (SigLIP's ``spiece.model``); None for CLIP / SLIP.
    """

    config: CLIPConfig
    params: Any
    dtype: Any = jnp.float32
    info: dict = dataclasses.field(default_factory=dict)
    batch_size: int = 64
    tokenizer_file: str | None = None
    _weights_hash: tuple[Any, str] | None = dataclasses.field(default=None, init=False,
                                                               repr=False, compare=False)

    def __post_init__(self):
        self.dtype = resolve_dtype(self.dtype)

    @property
    def weights_sha256(self) -> str:
        """:func:`~crossgap_jax.models.checkpoint.fingerprint.params_fingerprint` of :attr:`params`:
        the value the loader computed (``info["params_sha256"]``), else computed once per
        params object (and recorded there)."""
        cached = self._weights_hash
        if cached is None or cached[0] is not self.params:
            cached = (self.params, params_fingerprint(self.params))
            self._weights_hash = cached
            self.info = {**self.info, "params_sha256": cached[1]}  # not shared with copies
        return cached[1]

    # --- text -----------------------------------------------------------------------
    @property
    def tokenizer(self) -> CLIPTokenizer:
        require_text_tower(self.config, "a tokenizer")
        family = family_of(self.config)
        if self.tokenizer_file is not None:
            return family.get_tokenizer(self.config, self.tokenizer_file)
        return family.get_tokenizer(self.config)

    def tokenize(self, texts: str | Sequence[str]) -> np.ndarray:
        """Texts -> ``(N, context_length)`` int32 ids (SOT ... EOT, zero padded, truncated)."""
        return self.tokenizer(texts)

    def encode_text(self, ids: np.ndarray | jax.Array, eot_index: np.ndarray | None = None, *,
                    batch_size: int | None = None, progress: bool | None = None,
                    project: bool = True) -> np.ndarray:
        """``(N, L)`` token ids -> ``(N, embed_dim)`` float32 features (not normalised).

        ``project=False``: the features before the text projection ``(N, text_width)``.

        The pooled position is, unless given, the family's ``pool_indices(ids, config)``
        when it has one (SigLIP: the last position), else the first ``eot_token_id`` of
        each row (CLIP).

        The inputs are checked on the host once per call, before any compiled code
        (:func:`~crossgap_jax.models.inputs.check_text_inputs`): SigLIP ids shorter than
        the context are padded as its tokenizer pads them.

        Raises:
            ValueError: ids not ``(N, L)``, longer than the context, an id outside the
                vocabulary (row, column and value named), an ``eot_index`` outside the
                sequence, a CLIP row without EOT.
            TypeError: non-integer ids.
        """
        require_text_tower(self.config, "text encoding")
        ids, eot_index = check_text_inputs(ids, eot_index, self.config)
        fn = functools.partial(_encode_text_jit, self.params, config=self.config,
                               dtype=self.dtype, project=project)
        dim = self.config.embed_dim if project else self.projection_matrices()[1].shape[0]
        causal = getattr(family_of(self.config), "CAUSAL_TEXT", False)
        return _batched(fn, [ids, eot_index], batch_size or self.batch_size, "encode text",
                        progress, dim, trim=trim_causal_text if causal else None)

    # --- image ----------------------------------------------------------------------
    def preprocess(self, images: Sequence[Any]) -> np.ndarray:
        """PIL images -> ``(N, H, W, 3)`` float32, normalised (NHWC), as the family does it
        (CLIP: bicubic shortest-side resize + centre crop; SigLIP: squash resize; SLIP:
        bilinear + ImageNet mean/std)."""
        return preprocess_images(images, **self.preprocess_options)

    @property
    def preprocess_options(self) -> dict:
        """Keyword arguments of :func:`~crossgap_jax.data.preprocess.preprocess_image`."""
        return family_of(self.config).preprocess_options(self.config)

    def encode_image(self, pixels: np.ndarray | jax.Array, *, batch_size: int | None = None,
                     progress: bool | None = None, project: bool = True) -> np.ndarray:
        """``(N, H, W, 3)`` preprocessed pixels -> ``(N, embed_dim)`` float32 features.

        ``project=False``: the features before the image projection ``(N, vision_width)``.
        """
        pixels = np.asarray(pixels, dtype=np.float32)
        s = self.config.vision.image_size
        if pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise ValueError(f"pixels must be (N, {s}, {s}, 3) NHWC, got {pixels.shape}")
        fn = functools.partial(_encode_image_jit, self.params, config=self.config,
                               dtype=self.dtype, project=project)
        dim = self.config.embed_dim if project else self.projection_matrices()[0].shape[0]
        return _batched(fn, [pixels], batch_size or self.batch_size, "encode images", progress,
                        dim)

    def projection_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """``(W_i (d_i, embed_dim), W_t (d_t, embed_dim))``: pre-projection -> joint space."""
        wi, wt = family_of(self.config).projection_matrices(self.params, self.config)
        return np.asarray(wi, np.float32), np.asarray(wt, np.float32)

    # --- pure functions -------------------------------------------------------------
    @property
    def fns(self) -> Any:
        """Pure apply functions with ``config`` and ``dtype`` bound (take ``params`` first)."""
        names = ("embed_tokens", "encode_text_embeddings", "encode_text", "embed_image_patches",
                 "encode_image_tokens", "encode_image")
        family = family_of(self.config)
        bound = {n: functools.partial(getattr(family, n), config=self.config, dtype=self.dtype)
                 for n in names}
        return type("CLIPFns", (), bound)

    def with_dtype(self, dtype: Any) -> CLIP:
        out = dataclasses.replace(self, dtype=resolve_dtype(dtype))
        out._weights_hash = self._weights_hash  # same params object: same hash
        return out


def create_clip(arch: str | CLIPConfig, seed: int = 0, dtype: Any = "float32") -> CLIP:
    """A randomly initialised CLIP (tests, training from scratch). Never a demo model."""
    config = get_config(arch)
    return CLIP(config, family_of(config).init_params(config, seed), dtype=dtype,
                info={"source": f"random init (seed {seed})", "format": "random"})


def load_clip(name_or_path: str | CLIPConfig, checkpoint: str | None = None, *,
              pretrained: str | None = None,
              dtype: Any = "float32", quick_gelu: bool | None = None,
              allow_pickle: bool = False, cache_dir: str | None = None,
              tokenizer: str | None = None) -> CLIP:
    """Load a CLIP model.

    Args:
        name_or_path: an architecture name (``"ViT-B/32"``, ``"ViT-L-14"``, ...), or, with
            ``checkpoint=None``, a checkpoint path / hub id whose architecture is inferred.
        checkpoint: a file, directory, Hugging Face hub id (``"openai/clip-vit-base-patch32"``),
            ``"hf-hub:<repo>"`` (open_clip on the hub) or ``"openai"`` (OpenAI's release URL for
            that architecture). ``None`` with an architecture name means the architecture's
            default release.
        pretrained: open_clip's name for ``checkpoint`` (``load_clip("ViT-B-16-SigLIP",
            pretrained="webli")``); give one of the two.
        dtype: compute dtype, ``"float32"`` (default) or ``"bfloat16"``; params stay float32.
        quick_gelu: override the activation (needed for open_clip ``-quickgelu`` weights loaded
            from a bare state dict).
        allow_pickle: let ``torch.load`` run with ``weights_only=False`` (only for files you
            trust).
        cache_dir: where downloads are cached.
        tokenizer: the tokenizer model file for families that need one (SigLIP's
            ``spiece.model``); default: the one found beside the checkpoint.

    Every family (``config.family``: ``"clip"``, ``"siglip"``, ``"slip"``) loads through
    :func:`crossgap_jax.models.load` and that family's hooks: an architecture of the
    family by name (or open_clip alias), or a checkpoint path the family recognises.

    Returns:
        A :class:`CLIP` bundle.
    """
    config, params, info = load(name_or_path, checkpoint, pretrained=pretrained,
                                quick_gelu=quick_gelu, allow_pickle=allow_pickle,
                                cache_dir=cache_dir, tokenizer=tokenizer)
    bundle = CLIP(config, params, dtype=dtype, info=info,
                  tokenizer_file=tokenizer or info.get("tokenizer_file"))
    bundle._weights_hash = (params, info["params_sha256"])  # computed once, by the loader
    return bundle
