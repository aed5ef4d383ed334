"""Bad input to IsoCLIP's presets and CLI options: clear errors naming the fix."""

from __future__ import annotations

import pytest
from support.tiny_models import tiny_clip

from crossgap_jax.cli import build_parser
from crossgap_jax.pipeline.presets import ISOCLIP_K, PRESETS, Preset, isoclip_k, preset


def test_published_values_are_the_presets():
    # PAPER.md, "IsoCLIP, exactly": (image retrieval & classification, text retrieval).
    assert isoclip_k(preset("clip_vitb32"), "image") == ((150, 50),
                                                             "published for ViT-B/32 (openai)")
    assert isoclip_k(preset("clip_vitb32"), "text")[0] == (20, 100)
    assert isoclip_k(preset("clip_vitl14"), "image")[0] == (250, 200)
    assert isoclip_k(preset("clip_vitl14"), "text")[0] == (10, 300)
    assert isoclip_k(preset("openclip_vitb32"), "image")[0] == (50, 50)
    # Backbones without a preset of their own, selected with --model.
    assert isoclip_k(preset("clip_vitb32", model="ViT-B/16"), "text")[0] == (10, 50)
    cfg = preset("openclip_vitb32", model="ViT-B-16")
    assert isoclip_k(cfg, "image")[0] == (100, 100) and isoclip_k(cfg, "text")[0] == (2, 150)
    # open_clip's name of the OpenAI weights.
    assert isoclip_k(preset("clip_vitb32", model="ViT-B-32-quickgelu"), "image")[0] == \
        (150, 50)
    # SigLIP2 B/16 (IsoCLIP's siglipv2_b16_img_retrieval.sh), by our name and open_clip's.
    assert isoclip_k(preset("siglip2_vitb16"), "image")[0] == (350, 50)
    assert isoclip_k(preset("siglip2_vitb16", model="ViT-B-16-SigLIP2"), "image")[0] == \
        (350, 50)
    assert isoclip_k(preset("pecore_vitb16"), "image")[0] == (300, 50)
    assert len(ISOCLIP_K) == 7 and all(set(v) <= {"image", "text"} for v in ISOCLIP_K.values())


@pytest.mark.parametrize("name,task,hint", [
    ("openclip_vitb32", "text", r"published none for ViT-B-32 \(datacomp_xl_s13b_b90k\) "
                                r"\(only image-task values\)"),
    ("openclip_vitl14", "image", r"published none for ViT-L-14 \(datacomp_xl_s13b_b90k\), "
                                 "only for"),
    ("siglip_vitb16", "image", "published none for"),  # SigLIP, not the SigLIP2 IsoCLIP ran
    ("slip_vitb16", "text", "published none for"),
])
def test_unpublished_backbone_asks_for_the_option(name, task, hint):
    with pytest.raises(ValueError, match=f"^IsoCLIP needs .*--isoclip-k TOP,BOTTOM.*{hint}"):
        isoclip_k(preset(name), task)
    # The override is used as given.
    assert isoclip_k(preset(name, isoclip_k=(3, 4)), task) == ((3, 4), "--isoclip-k")
    assert set(PRESETS) >= {name}


@pytest.mark.parametrize("bad", [(1,), (1, -2), (1.5, 2), "12", (True, 1)])
def test_malformed_override_is_refused(bad):
    with pytest.raises(ValueError, match="TOP,BOTTOM"):
        Preset("x", "x", "y", isoclip_k=bad)


@pytest.mark.parametrize("cmd", ["retrieve", "classify"])
@pytest.mark.parametrize("value", ["150", "150,50,1", "-1,5", "a,b", "1.5,2", ""])
def test_cli_validates_isoclip_k(cmd, value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([cmd, "--dataset", "x", f"--isoclip-k={value}"])
    assert e.value.code == 2
    assert "two non-negative integers" in capsys.readouterr().err


def test_cli_parses_isoclip_k():
    args = build_parser().parse_args(["classify", "--dataset", "x", "--isoclip-k", "150, 50"])
    assert args.isoclip_k == (150, 50)


def test_unknown_classify_variant_is_an_error(tmp_path):
    from crossgap_jax.pipeline import measure
    from crossgap_jax.pipeline.run import Run
    from crossgap_jax.pipeline.settings import RunSettings

    run = Run(str(tmp_path), RunSettings(preset("clip_vitb32")), tiny_clip(0))
    with pytest.raises(ValueError, match=r"\['nmc'\].*isoclip-ncm"):
        measure.classify(run, "caltech101", ["inter", "nmc"])
