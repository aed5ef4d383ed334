"""``crossgap-jax``: a thin command line over the library (all work is in importable functions).

Examples::

    crossgap-jax demo
    crossgap-jax list
    crossgap-jax convert ViT-B-32.pt vitb32.safetensors
    crossgap-jax reproduce --preset clip_vitb32 --datasets caltech101,coco_text \\
        --data-root /data --run-dir results/b32
    crossgap-jax retrieve --pretrained demo --dataset caltech101 --max-queries 20
    crossgap-jax analyze --preset clip_vitb32 --dataset caltech101 --num-tokens 1,4

Every option is typed and range-checked by the parser, each command accepts only the
options it uses (:data:`OPTIONS`), and every dataset, preset, data root and checkpoint is
checked before any computation (:func:`validate`).
"""

from __future__ import annotations

import sys

from crossgap_jax.cli.checks import (  # noqa: F401 (the CLI's face)
    _CLI_WORDS,
    _check_dataset,
    _check_root,
    _check_source,
    _check_tag,
    _looks_like_path,
    _one_line,
    _source_option,
    cli_words,
    data_roots,
    validate,
)
from crossgap_jax.cli.commands import (  # noqa: F401 (the CLI's face)
    _ARGV,
    _ArgvHolder,
    _init_distributed,
    _make_run,
    _process_ids,
    _write_outputs,
    cmd_analyze,
    cmd_bench,
    cmd_classify,
    cmd_convert,
    cmd_demo,
    cmd_encode,
    cmd_invert,
    cmd_list,
    cmd_reproduce,
    cmd_retrieve,
)
from crossgap_jax.cli.main import (  # noqa: F401 (the CLI's face)
    _saved_summary,
    build_parser,
    main,
    quiet_progress,
)
from crossgap_jax.cli.options import (  # noqa: F401 (the CLI's face)
    _INVERT,
    _OUTPUT,
    _OV,
    _TASK,
    _USES_OTI,
    _USES_OVI,
    DEFAULT_PRESET,
    DEFAULT_VARIANTS,
    OPTIONS,
    PROG,
    RUN_COMMANDS,
    CLIError,
    Option,
    _add_options,
    _add_quiet,
    _float,
    _int,
    _opt,
    did_you_mean,
    isoclip_k_pair,
    name_list,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
    template,
    variant_list,
)

if __name__ == "__main__":
    sys.exit(main())
