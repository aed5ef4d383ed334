"""Deprecated module path: the image readers live one per source in
:mod:`crossgap_jax.data.sources` (``coop``, ``fgvc_aircraft``, ``imagenet``, ``cub``, ``sop``,
``revisitop``, ``imagefolder``). Names still resolve here, with a
:class:`DeprecationWarning`."""

from crossgap_jax.data import _fs, _moved
from crossgap_jax.data.sources import (
    coop,
    cub,
    fgvc_aircraft,
    imagefolder,
    imagenet,
    revisitop,
    sop,
)

__getattr__, __dir__ = _moved.forward(
    __name__, [coop, fgvc_aircraft, imagenet, cub, sop, revisitop, imagefolder, _fs])
