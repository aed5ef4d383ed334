"""The plumbing every model family shares: a cached Flax module per (config, dtype), random
init, abstract param shapes and ``apply`` of a named method over a params pytree."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

_P = inspect.Parameter


class ModuleFns:
    """Pure-function access to a Flax module class whose ``__call__(pixels, ids, pool_index)``
    (``__call__(pixels)`` with ``image_only``) touches every parameter (so ``init`` creates
    them all).

    Args:
        module_cls: the family's ``nn.Module`` class, constructed as
            ``module_cls(config, dtype=dtype)``.
        image_only: the module has no text tower (DINOv2, DINOv3): ``init`` takes pixels only.
    """

    def __init__(self, module_cls: type, *, image_only: bool = False):
        self.module_cls = module_cls
        self.image_only = image_only
        self.module = functools.lru_cache(maxsize=64)(
            lambda config, dtype: module_cls(config, dtype=dtype))

    def dummy_inputs(self, config: Any) -> tuple[jax.Array, ...]:
        v, t = config.vision, config.text
        pixels = jnp.zeros((1, v.image_size, v.image_size, 3), jnp.float32)
        if self.image_only:
            return (pixels,)
        return (pixels, jnp.zeros((1, t.context_length), jnp.int32), jnp.zeros((1,), jnp.int32))

    def init_params(self, config: Any, rng: jax.Array | int = 0) -> Any:
        """Randomly initialised float32 params for ``config`` (tests, training from scratch)."""
        if isinstance(rng, int):
            rng = jax.random.PRNGKey(rng)
        init = jax.jit(self.module(config, jnp.float32).init)
        with jax.enable_x64(False):  # Flax's dtype-less initialisers would draw float64
            return init(rng, *self.dummy_inputs(config))["params"]

    def param_shapes(self, config: Any) -> Any:
        """``jax.ShapeDtypeStruct`` pytree of the params of ``config`` (no allocation)."""
        return jax.eval_shape(lambda: self.module(config, jnp.float32).init(
            jax.random.PRNGKey(0), *self.dummy_inputs(config))["params"])

    def apply(self, method: str, params: Any, *args: Any, config: Any,
              dtype: Any = jnp.float32) -> Any:
        """``module.apply({"params": params}, *args, method=<method>)``."""
        return self.module(config, dtype).apply(
            {"params": params}, *args, method=getattr(self.module_cls, method))

    def function(self, method: str, args: str, doc: str, *, options: dict | None = None,
                 check: Callable[[Any, Any], None] | None = None,
                 module: str | None = None) -> Callable:
        """A family's pure entry point ``<method>(params, <args>, *, config, dtype=float32,
        <options>)``: ``apply`` of the module method ``method`` with ``args`` then the
        option values, positionally (so the method lists them in that order).

        Args:
            method: the module method (and the function's name).
            args: the data arguments after ``params``, space-separated (``"pixels"``).
            doc: the function's docstring (shapes, errors).
            options: keyword-only options and their defaults, passed on to the method.
            check: ``check(first data argument, config)`` on the host before the call
                (input validation that raises a clear error).
            module: ``__module__`` of the function (the family's model module).
        """
        names = args.split()
        options = dict(options or {})
        sig = inspect.Signature(
            [_P("params", _P.POSITIONAL_OR_KEYWORD)]
            + [_P(n, _P.POSITIONAL_OR_KEYWORD) for n in names]
            + [_P("config", _P.KEYWORD_ONLY), _P("dtype", _P.KEYWORD_ONLY, default=jnp.float32)]
            + [_P(k, _P.KEYWORD_ONLY, default=v) for k, v in options.items()])

        def fn(*a: Any, **kw: Any) -> Any:
            bound = sig.bind(*a, **kw)
            bound.apply_defaults()
            v = bound.arguments
            if check is not None:
                check(v[names[0]], v["config"])
            return self.apply(method, v["params"], *(v[n] for n in names + list(options)),
                              config=v["config"], dtype=v["dtype"])

        fn.__signature__ = sig
        fn.__name__ = fn.__qualname__ = method
        fn.__doc__ = doc
        fn.__module__ = module or fn.__module__
        return fn


# --- in-range gathers inside compiled code ---------------------------------------------------
# The host-side checks (crossgap_jax.models.inputs) refuse bad ids and pool indices before a
# compiled call. Inside jitted code the gathers below keep the behaviour explicit for callers
# of the raw pure functions: an index outside the table / sequence (negative ones included;
# no NumPy-style wrap-around) gives a NaN row, never another row's values.
def embed_rows(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``table[ids]`` for a ``(V, W)`` table and integer ``ids`` of any shape -> ``(*ids, W)``.

    An id outside ``[0, V)`` gives a row of NaN (``mode="fill"``, negative ids not wrapped).
    """
    return jnp.asarray(table).at[ids].get(mode="fill", fill_value=jnp.nan,
                                          wrap_negative_indices=False)


def pool_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """``x[b, index[b]]`` for ``x`` ``(B, L, W)`` and ``index`` ``(B,)`` -> ``(B, W)``.

    An index outside ``[0, L)`` gives a row of NaN (negative indices are not wrapped).
    """
    return x.at[jnp.arange(x.shape[0]), index].get(mode="fill", fill_value=jnp.nan,
                                                   wrap_negative_indices=False)


class ImageFunctions(NamedTuple):
    """A family's pure image entry points (module methods of the same names)."""

    embed_image_patches: Callable
    encode_image_tokens: Callable
    encode_image: Callable
    encode_image_preproj: Callable


def image_functions(fns: ModuleFns, module: str, *, pooled_only: bool = True,
                    check: Callable[[Any, Any], None] | None = None) -> ImageFunctions:
    """The pure image entry points every family has: ``embed_image_patches``,
    ``encode_image_tokens`` (with a ``pooled_only`` option when ``pooled_only``),
    ``encode_image`` and ``encode_image_preproj`` (``check(pixels, config)`` before the
    pixel ones). ``module``: the functions' ``__module__``."""
    pooled = (" ``pooled_only``: the last block computes the pooled row only where the "
              "pooling reads one row (the class token; exact), else it has no effect.")
    return ImageFunctions(
        fns.function(
            "embed_image_patches", "pixels",
            "``(B, H, W, 3)`` pixels -> ``(B, N, vision_width)`` patch tokens: the patch "
            "convolution's output (no positions).", module=module),
        fns.function(
            "encode_image_tokens", "tokens",
            "``(B, N, vision_width)`` patch tokens of a ``config.vision.image_size`` input -> "
            "``(B, embed_dim)`` image features (class / register tokens and positions added "
            "here)." + (pooled if pooled_only else ""),
            options={"pooled_only": False} if pooled_only else None, module=module),
        fns.function(
            "encode_image", "pixels",
            "``(B, H, W, 3)`` normalised pixels -> ``(B, embed_dim)`` float32 image features "
            "(not normalised).", check=check, module=module),
        fns.function(
            "encode_image_preproj", "pixels",
            "``(B, H, W, 3)`` normalised pixels -> ``(B, vision_width)`` float32 features "
            "before the image projection (the image head of "
            ":func:`projection_matrices`).", check=check, module=module),
    )
