"""``crossgap-jax``: a thin command line over the library (all work is in importable functions).

Examples::

    crossgap-jax demo
    crossgap-jax list
    crossgap-jax convert ViT-B-32.pt vitb32.safetensors
    crossgap-jax reproduce --preset clip_vitb32 --datasets caltech101,coco_text \\
        --data-root /data --run-dir results/b32
    crossgap-jax retrieve --pretrained demo --dataset caltech101 --max-queries 20
    crossgap-jax analyze --preset clip_vitb32 --dataset caltech101 --num-tokens 1,4

Every option is typed and range-checked by the parser (:mod:`~crossgap_jax.cli.options`),
each command accepts only the options it uses, and every dataset, preset, data root and
checkpoint is checked before any computation (:func:`crossgap_jax.cli.checks.validate`).
Importing this face loads neither JAX nor the models (argument errors come back at once).
"""

from __future__ import annotations

import sys

from crossgap_jax.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
