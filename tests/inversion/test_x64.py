"""Results do not depend on ``jax_enable_x64`` (issue 22, item 4): the same seed gives the
same initial pseudo tokens and the same OTI / OVI / ``invert_dataset`` results, bit for bit
on CPU, in a process with ``JAX_ENABLE_X64=1`` as in one without. The settings are recorded
(manifest, shards) and a resume under other ones is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from crossgap_jax.inversion import ExecutionSettings, OTISettings, jax_numerics
from crossgap_jax.inversion.resumable import ResumeMismatchError, invert_dataset, load_inverted
from crossgap_jax.models.bundle import create_clip

EX4 = ExecutionSettings(batch_size=4, progress=False)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHILD = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    import crossgap_jax as cg
    from crossgap_jax.inversion.resumable import invert_dataset, item_init, load_inverted
    from crossgap_jax.models.bundle import create_clip
    clip = create_clip("tiny", 0)
    f = np.random.default_rng(0).normal(size=(5, clip.config.embed_dim)).astype(np.float32)
    names = [f"item-{i}" for i in range(5)]
    r = cg.oti(clip, f, steps=6, record_steps=(2,), batch_size=4, progress=False)
    v = cg.ovi(clip, f, steps=4, record_steps=(3,), batch_size=4, progress=False)
    ex = cg.inversion.ExecutionSettings(batch_size=4, progress=False)
    invert_dataset(clip, names, f, sys.argv[2] + "/oti", cg.inversion.OTISettings(steps=5), ex,
                   shard_size=4)
    invert_dataset(clip, names, f, sys.argv[2] + "/ovi", cg.inversion.OVISettings(steps=3), ex,
                   shard_size=4)
    out = {"x64": np.asarray(jax.config.jax_enable_x64),
           "init": item_init(names, 0, (1, clip.config.text.width))}
    for k in ("pseudo_tokens", "features", "losses", "recorded_tokens", "recorded_features"):
        out["oti_" + k], out["ovi_" + k] = getattr(r, k), getattr(v, k)
    for m in ("oti", "ovi"):
        _, a = load_inverted(sys.argv[2] + "/" + m)
        out.update({f"ds_{m}_{k}": x for k, x in a.items()})
    np.savez(sys.argv[1], **out)
""")


def _child(tmp, x64: str):
    env = dict(os.environ, JAX_ENABLE_X64=x64, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    out = str(tmp / f"x64-{x64}.npz")
    subprocess.run([sys.executable, "-c", CHILD, out, str(tmp / f"runs-{x64}")], check=True,
                   env=env, cwd=REPO, timeout=600)
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.slow
def test_x64_flag_changes_no_bit(tmp_path):
    default, x64 = _child(tmp_path, "0"), _child(tmp_path, "1")
    assert not default.pop("x64") and x64.pop("x64")
    assert set(default) == set(x64) and len(default) > 20
    for k in default:
        assert x64[k].dtype == default[k].dtype, k  # float32 stays float32
        np.testing.assert_array_equal(x64[k], default[k], err_msg=k)
    # what is compared is not trivial: the init is the seeded N(0, 0.02^2) draw
    assert default["init"].dtype == np.float32 and 0.01 < default["init"].std() < 0.03
    # the manifests record the setting each run was made under
    for x in ("0", "1"):
        with open(tmp_path / f"runs-{x}" / "oti" / "manifest.json") as f:
            m = json.load(f)
        assert m["numerics"] == {"jax_enable_x64": x == "1",
                                 "jax_default_matmul_precision": None}
        assert m["environment"]["backend"] == "cpu"
    # a default process refuses to resume the x64 run's shards, naming the setting and fix
    clip = create_clip("tiny", 0)
    f = np.random.default_rng(0).normal(size=(5, clip.config.embed_dim)).astype(np.float32)
    with pytest.raises(ResumeMismatchError, match=r"jax_enable_x64=True.*JAX_ENABLE_X64=1"):
        invert_dataset(clip, [f"item-{i}" for i in range(5)], f, str(tmp_path / "runs-1/oti"),
                       OTISettings(steps=5), EX4, shard_size=4)


def test_numerics_recorded_and_checked(tiny, tmp_path, monkeypatch):
    import jax

    clip = tiny
    f = np.random.default_rng(1).normal(size=(3, clip.config.embed_dim)).astype(np.float32)
    names = ["a", "b", "c"]
    two = OTISettings(steps=2)
    out = str(tmp_path / "run")
    invert_dataset(clip, names, f, out, two, EX4, shard_size=4)
    numerics = jax_numerics()
    assert numerics == {"jax_enable_x64": bool(jax.config.jax_enable_x64),
                        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
                        "backend": jax.default_backend(),
                        "device_kind": jax.local_devices()[0].device_kind,
                        "jax_version": jax.__version__}
    shard = next(p for p in os.listdir(out) if p.startswith("shard-"))
    with np.load(os.path.join(out, shard)) as z:
        assert json.loads(str(z["meta"]))["numerics"] == numerics
    # another default matmul precision: refused, with the setting and the way back
    with jax.default_matmul_precision("highest"):
        with pytest.raises(ResumeMismatchError,
                           match=r"jax_default_matmul_precision=None.*this process has "
                                 r"jax_default_matmul_precision='highest'.*unset "
                                 r"JAX_DEFAULT_MATMUL_PRECISION"):
            invert_dataset(clip, names, f, out, two, EX4, shard_size=4)
    # a manifest written before the settings were recorded counts as JAX's defaults; another
    # backend or JAX version is recorded only (float rounding, like batch_size)
    path = os.path.join(out, "manifest.json")
    with open(path) as fh:
        m = json.load(fh)
    del m["numerics"]
    m["environment"] = {"backend": "tpu", "device_kind": "TPU v4", "jax_version": "0.0.1"}
    with open(path, "w") as fh:
        json.dump(m, fh)
    again = invert_dataset(clip, names, f, out, two, EX4, shard_size=4)
    assert (again.already_done, again.inverted) == (3, 0)
    assert load_inverted(out)[0] == names
