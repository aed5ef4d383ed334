"""Bad input to the compatibility switches: clear errors naming the option and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from crossgap_jax.cli import main
from crossgap_jax.inversion import oti


def test_unknown_loss_reduction_is_named(tiny):
    x = np.ones((2, tiny.config.embed_dim), np.float32)
    with pytest.raises(ValueError, match="loss_reduction must be one of"):
        oti(tiny, x, steps=1, loss_reduction="sum", progress=False)


def test_cli_rejects_unknown_switch_values(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--datasets", "caltech101", "--metric-variant", "paper"])
    assert "invalid choice: 'paper'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--datasets", "caltech101", "--loss-reduction", "sum"])
    assert "invalid choice: 'sum'" in capsys.readouterr().err


def test_missing_distractor_folder_is_named(tmp_path):
    from crossgap_jax.pipeline.presets import preset
    from crossgap_jax.pipeline.run import Run
    from crossgap_jax.pipeline.settings import RunSettings

    settings = RunSettings(preset("clip_vitb32", batch_size=8),
                           revisitop1m=str(tmp_path / "nowhere"))
    run = Run(str(tmp_path / "run"), settings, clip=None)
    with pytest.raises(FileNotFoundError, match="revisitop1m distractors: no folder"):
        run.revisitop1m_dir()
    empty = tmp_path / "r1m" / "jpg"
    empty.mkdir(parents=True)
    from crossgap_jax.pipeline.tasks import with_revisitop1m

    with pytest.raises(FileNotFoundError, match=r"no .*\*/\*\.jpg images"):
        with_revisitop1m(None, str(empty))


def test_partly_finished_batch_is_refused():
    from crossgap_jax.inversion.resumable import ResumeMismatchError, _batch_aligned_chunks

    # items 0..6 in batches [0, 3), [3, 6), [6, 7); shard of 4 items -> 1 batch per chunk
    assert _batch_aligned_chunks(list(range(7)), 3, 4, 7, "d") == [[0, 1, 2], [3, 4, 5], [6]]
    assert _batch_aligned_chunks([3, 4, 5, 6], 3, 8, 7, "d") == [[3, 4, 5, 6]]
    with pytest.raises(ResumeMismatchError, match="batch 1 .* is partly finished"):
        _batch_aligned_chunks([0, 1, 2, 4, 5], 3, 4, 7, "d")
