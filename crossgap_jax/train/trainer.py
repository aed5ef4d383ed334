"""Contrastive training of the port's CLIP (jit, optax, sharded data, checkpoints).

One jitted step does: augment the batch on device, encode images (one view, two for the
intra-modal variant) and the sampled captions, compute the loss, AdamW update. The batch is
sharded over a 1-D ``Mesh(("data",))`` of the local devices (params replicated), so the same
code runs on one CPU device and on several accelerators. Everything random derives from
``TrainConfig.seed``: the init, the epoch permutations (NumPy ``default_rng``) and the
per-step augmentation/caption keys (``fold_in(key, step)``); on CPU the run is bit-for-bit
reproducible.

Variants (``TrainConfig.variant``):

* ``"clip"`` (a): symmetric InfoNCE with a learned temperature (init 0.07, capped at 1/100).
* ``"clip+slip"`` (b): (a) plus SLIP's intra-modal term: SimCLR's NT-Xent between two
  augmented views, on a small MLP head over the image trunk (the head is trained with the
  model and dropped from the exported checkpoint).
* ``"clip-t1"`` (c): (a) with the temperature fixed to 1 (``logit_scale`` = 0, frozen).
* ``"clip+intra"`` (b'): (a) plus the same NT-Xent term on the joint image embedding itself
  (no head), the most direct form of the factor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from crossgap_jax.fileio import atomic_write_json, atomic_write_with, ensure_dir, jsonable
from crossgap_jax.inversion import DATA_AXIS, make_mesh
from crossgap_jax.models import (
    CLIP,
    CLIPConfig,
    save_native,
)
from crossgap_jax.models.clip import model as clip_lib
from crossgap_jax.train import losses
from crossgap_jax.train.augment import augment
from crossgap_jax.train.configs import HEAD_DIM, HEAD_HIDDEN, TrainConfig
from crossgap_jax.train.data import LabelledImages, caption_table


@functools.lru_cache(maxsize=16)
def _init_fn(config: CLIPConfig):
    """A jitted ``rng -> params`` per architecture (the same computation as
    ``clip_lib.init_params``, compiled once instead of per call)."""
    module = clip_lib.CLIPModule(config)
    v, t = config.vision, config.text

    def init(rng):
        return module.init(rng, jnp.zeros((1, v.image_size, v.image_size, 3), jnp.float32),
                           jnp.zeros((1, t.context_length), jnp.int32),
                           jnp.zeros((1,), jnp.int32))["params"]

    return jax.jit(init)


def init_params(cfg: TrainConfig) -> Any:
    """Initial CLIP params for ``cfg`` (seeded); ``logit_scale`` set for the variant."""
    config = cfg.clip_config
    params = _init_fn(config)(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 0))
    params = dict(params)
    t = cfg.init_temperature if cfg.learn_temperature else 1.0
    params["logit_scale"] = jnp.asarray(np.log(1.0 / t), jnp.float32)
    return params


class ProjectionHead(nn.Module):
    """SLIP's image SSL head, scaled down: (Dense, LayerNorm, GELU) x 2, Dense.

    It maps the image trunk's pooled output (``ln_post`` of the class token, before the
    CLIP projection) to the space of the SimCLR loss, so that loss shapes the trunk without
    acting on the joint embedding directly (SLIP uses BatchNorm/ReLU, 4096 hidden, 256 out).
    """

    hidden: int = HEAD_HIDDEN
    out: int = HEAD_DIM

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(2):
            x = nn.Dense(self.hidden, name=f"fc{i}")(x)
            x = nn.LayerNorm(name=f"ln{i}")(x)
            x = jax.nn.gelu(x)
        return nn.Dense(self.out, name="out")(x)


def init_head(cfg: TrainConfig) -> Any:
    """Params of the SLIP head for variant (b) (seeded), ``{}`` for the other variants."""
    if not cfg.intra_head:
        return {}
    width = cfg.clip_config.vision.width
    return jax.jit(ProjectionHead().init)(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 3),
                                          jnp.zeros((1, width), jnp.float32))["params"]


def image_trunk_and_embedding(params: Any, pixels: jax.Array, config: CLIPConfig
                              ) -> tuple[jax.Array, jax.Array]:
    """``(pooled (B, vision_width), features (B, embed_dim))`` in one pass.

    ``pooled`` is the image tower's output before the projection (``ln_post`` of the class
    token): the tower run with an identity projection. ``features = pooled @ proj`` is then
    exactly the usual image feature.
    """
    width = config.vision.width
    visual = dict(params["visual"], proj=jnp.eye(width, dtype=jnp.float32))
    tower = clip_lib.VisionTransformer(config.replace(embed_dim=width))
    pooled = tower.apply({"params": visual}, pixels)
    return pooled, pooled @ params["visual"]["proj"]


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (not biases, LayerNorm, class token, logit scale)."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(cfg: TrainConfig, params: Any) -> optax.GradientTransformation:
    """AdamW, linear warm-up + cosine decay, global-norm clipping; logit scale frozen for
    variant (c)."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(cfg.steps - 1, 0)), cfg.steps, 0.0)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                    mask=_decay_mask(params)),
    )
    if not cfg.learn_temperature:
        labels = jax.tree_util.tree_map(lambda _: "train", params)
        # ``params``: CLIP params, or the trainer's {"clip": ..., "head": ...}.
        (labels["clip"] if "clip" in labels else labels)["logit_scale"] = "frozen"
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    return tx


def learning_rate_at(cfg: TrainConfig, step: int) -> float:
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, min(cfg.warmup_steps, max(cfg.steps - 1, 0)), cfg.steps, 0.0)
    return float(schedule(step))


def loss_fn(params: Any, batch: dict[str, jax.Array], key: jax.Array, cfg: TrainConfig,
            head: Any = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Loss of one batch.

    Args:
        params: CLIP params.
        batch: ``images (B, S, S, 3) uint8``, ``labels (B,)``, ``ids (B, L)``, ``eot (B,)``.
        key: PRNG key of this step (augmentation).
        cfg: the training config (static).
        head: params of the SLIP head (variant ``"clip+slip"`` only).

    Returns:
        ``(loss, metrics)``.
    """
    config = cfg.clip_config
    k1, k2 = jax.random.split(key)
    mean, std = config.mean, config.std
    view1 = augment(k1, batch["images"], cfg.augment, mean, std)
    txt = clip_lib.encode_text(params, batch["ids"], batch["eot"], config=config)
    scale = params["logit_scale"]
    if cfg.learn_temperature:
        scale = jnp.minimum(scale, jnp.log(cfg.max_logit_scale))
    else:
        scale = jax.lax.stop_gradient(scale)
    if cfg.use_intra:
        view2 = augment(k2, batch["images"], cfg.augment, mean, std)
        b = view1.shape[0]
        both = jnp.concatenate([view1, view2])
        if cfg.intra_head:  # (b) SLIP: the SimCLR term on a head over the image trunk
            if not head:
                raise ValueError("variant 'clip+slip' needs the head params (init_head)")
            pooled, img_both = image_trunk_and_embedding(params, both, config)
            z = ProjectionHead().apply({"params": head}, pooled)
        else:  # (b') the SimCLR term on the joint embedding itself
            img_both = clip_lib.encode_image(params, both, config=config)
            z = img_both
        img = img_both[:b]
        l_clip = losses.clip_loss(img, txt, scale, batch["labels"])
        l_intra = losses.intra_image_loss(z[:b], z[b:], cfg.intra_temperature)
        loss = l_clip + cfg.intra_weight * l_intra
    else:
        img = clip_lib.encode_image(params, view1, config=config)
        l_clip = losses.clip_loss(img, txt, scale, batch["labels"])
        l_intra = jnp.zeros((), jnp.float32)
        loss = l_clip
    return loss, {"loss": loss, "clip_loss": l_clip, "intra_loss": l_intra,
                  "temperature": jnp.exp(-scale)}


@functools.lru_cache(maxsize=16)
def make_train_step(cfg: TrainConfig):
    """``(tx, step)``: the optimizer and the jitted
    ``(trainable, opt_state, batch, key) -> (trainable, opt_state, metrics)`` for ``cfg``,
    where ``trainable = {"clip": CLIP params, "head": SLIP head params or {}}``.

    Cached per config, so repeated runs of one config (tests, resumes) compile once.
    """
    shapes = {"clip": clip_lib.param_shapes(cfg.clip_config),
              "head": jax.eval_shape(lambda: init_head(cfg))}
    tx = make_optimizer(cfg, shapes)

    def objective(trainable, batch, key):
        return loss_fn(trainable["clip"], batch, key, cfg, trainable["head"])

    def step(trainable, opt_state, batch, key):
        (_, metrics), grads = jax.value_and_grad(objective, has_aux=True)(trainable, batch, key)
        updates, opt_state = tx.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        if cfg.learn_temperature:  # CLIP clamps the parameter itself at log(100)
            clip_params = trainable["clip"]
            trainable = dict(trainable, clip=dict(clip_params, logit_scale=jnp.clip(
                clip_params["logit_scale"], 0.0, jnp.log(cfg.max_logit_scale))))
        metrics["grad_norm"] = optax.tree_utils.tree_norm(grads)
        return trainable, opt_state, metrics

    return tx, jax.jit(step, donate_argnums=(0, 1))


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        clip: the trained model as a :class:`~crossgap_jax.models.bundle.CLIP` bundle.
        config: the :class:`TrainConfig`.
        history: one dict per logged step (``step``, ``loss``, ``clip_loss``,
            ``intra_loss``, ``temperature``, ``grad_norm``, ``lr``, ``seconds``).
        seconds: training wall time (compile included; summed over resumed segments, up to
            the last logged step of an interrupted one).
        checkpoint: path of the saved native checkpoint, or None.
    """

    clip: CLIP
    config: TrainConfig
    history: list[dict[str, float]]
    seconds: float
    checkpoint: str | None = None


def _batches(n: int, batch_size: int, seed: int, start_step: int, steps: int):
    """Indices of each step's batch: seeded permutation per epoch, last partial dropped."""
    per_epoch = n // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the dataset size {n}")
    epoch_cache: dict[int, np.ndarray] = {}
    for step in range(start_step, steps):
        epoch, pos = divmod(step, per_epoch)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        yield step, epoch_cache[epoch][pos * batch_size:(pos + 1) * batch_size]


def _state_path(out_dir: str) -> str:
    return os.path.join(out_dir, "train_state.npz")


def save_train_state(path: str, params: Any, opt_state: Any, step: int, history: list,
                     cfg: TrainConfig) -> None:
    """Resumable state (params + optimizer state + history) as one ``.npz`` (atomic)."""
    leaves = jax.tree_util.tree_leaves((params, opt_state))
    arrays = {f"leaf_{i:05d}": np.asarray(x) for i, x in enumerate(leaves)}
    arrays["meta"] = np.frombuffer(json.dumps(
        {"step": step, "history": history, "config": cfg.to_dict()}).encode(), np.uint8)
    atomic_write_with(path, lambda f: np.savez(f, **arrays))


def load_train_state(path: str, params: Any, opt_state: Any, cfg: TrainConfig):
    """Restore a :func:`save_train_state` file onto the structure of ``(params, opt_state)``.

    Returns:
        ``(params, opt_state, step, history)``, or None if the file belongs to another
        config.
    """
    with np.load(path) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        if meta["config"] != jsonable(cfg.to_dict()):
            return None
        treedef = jax.tree_util.tree_structure((params, opt_state))
        n = treedef.num_leaves
        leaves = [z[f"leaf_{i:05d}"] for i in range(n)]
    params, opt_state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in leaves])
    return params, opt_state, int(meta["step"]), list(meta["history"])


def train(cfg: TrainConfig, data: LabelledImages, templates: tuple[str, ...] | list[str], *,
          out_dir: str | None = None, checkpoint_name: str = "model.safetensors",
          resume: bool = True, progress: bool = True, devices: Any = None,
          metadata: dict | None = None) -> TrainResult:
    """Train a CLIP from scratch on class-labelled images with template captions.

    Args:
        cfg: :class:`TrainConfig` (architecture, variant, optimisation, seed).
        data: the training images (only these are ever seen).
        templates: caption templates (``"a photo of a {}."``); per step each image gets one
            at random, formatted with its class name.
        out_dir: where the final native checkpoint (``checkpoint_name``), the resumable
            ``train_state.npz`` (every ``cfg.checkpoint_every`` steps) and
            ``history.json`` go; None keeps everything in memory.
        resume: continue from ``out_dir/train_state.npz`` if it matches ``cfg``.
        progress: tqdm bar.
        devices: devices of the data mesh (default: all local devices). The global batch
            must be divisible by their number.
        metadata: extra entries stored in the checkpoint's metadata.

    Returns:
        :class:`TrainResult`.
    """

    t0 = time.perf_counter()
    config: CLIPConfig = cfg.clip_config
    s = config.vision.image_size
    if data.images.shape[1:3] != (s, s):
        raise ValueError(f"images are {data.images.shape[1:3]}, the model wants {s}x{s}")
    mesh = make_mesh(devices)
    if cfg.batch_size % mesh.size:
        raise ValueError(f"batch_size {cfg.batch_size} not divisible by {mesh.size} devices")
    shard = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    repl = NamedSharding(mesh, PartitionSpec())

    ids_table, eot_table = caption_table(data.classnames, templates, cfg.text_length,
                                         config.text.context_length)
    params = {"clip": init_params(cfg), "head": init_head(cfg)}  # what the optimizer trains
    # Fields that do not enter the step are normalised so their variations share one compile.
    tx, train_step = make_train_step(cfg.replace(seed=0, log_every=1, checkpoint_every=0))
    opt_state = tx.init(params)
    step0, history = 0, []
    if out_dir and resume and os.path.isfile(_state_path(out_dir)):
        restored = load_train_state(_state_path(out_dir), params, opt_state, cfg)
        if restored is not None:
            params, opt_state, step0, history = restored
            # Wall time accumulates over the interrupted segments.
            t0 -= history[-1]["seconds"] if history else 0.0
    params = jax.device_put(params, repl)
    opt_state = jax.device_put(opt_state, repl)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    caption_rng_seed = [cfg.seed, 2]

    bar = tqdm(total=cfg.steps, initial=step0, desc=f"train {cfg.variant}", unit="step",
               disable=not progress, dynamic_ncols=True)
    for step, idx in _batches(len(data), cfg.batch_size, cfg.seed, step0, cfg.steps):
        # Caption choice per (step, image): a fresh seeded generator per step keeps it
        # independent of where a resumed run started.
        tpl = np.random.default_rng([*caption_rng_seed, step]).integers(
            0, ids_table.shape[1], size=len(idx))
        labels = data.labels[idx]
        batch = {"images": data.images[idx], "labels": labels,
                 "ids": ids_table[labels, tpl], "eot": eot_table[labels, tpl]}
        batch = jax.device_put(batch, shard)
        params, opt_state, metrics = train_step(params, opt_state, batch,
                                                jax.random.fold_in(key, step))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            m.update(step=done, lr=learning_rate_at(cfg, step),
                     seconds=time.perf_counter() - t0)
            history.append(m)
            bar.set_postfix(loss=f"{m['loss']:.3f}", T=f"{m['temperature']:.3f}")
            if not np.isfinite(m["loss"]):
                bar.close()
                raise FloatingPointError(f"non-finite loss at step {done}: {m}")
        bar.update(1)
        if out_dir and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 \
                and done < cfg.steps:
            ensure_dir(out_dir)
            save_train_state(_state_path(out_dir), params, opt_state, done, history, cfg)
    bar.close()
    # The SLIP head (variant b) is a training device only: the model is the CLIP.
    params = jax.device_get(params["clip"])
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    seconds = time.perf_counter() - t0
    clip = CLIP(config, params, info={"source": "trained", "format": "native",
                                      "train_config": cfg.to_dict()})
    ckpt = None
    if out_dir:
        ensure_dir(out_dir)
        meta = {"train_config": cfg.to_dict(), "templates": list(templates),
                "data": data.name, "num_train_images": len(data),
                # No wall-clock entries: the same run must give the same file bytes.
                "final": {k: v for k, v in (history[-1] if history else {}).items()
                          if k != "seconds"},
                **(metadata or {})}
        ckpt = save_native(os.path.join(out_dir, checkpoint_name), config, params, meta)
        atomic_write_json(os.path.join(out_dir, "history.json"),
                          {"config": cfg.to_dict(), "history": history, "seconds": seconds},
                          indent=1, sort_keys=False)
        if os.path.isfile(_state_path(out_dir)):
            os.remove(_state_path(out_dir))
    return TrainResult(clip, cfg, history, seconds, ckpt)
