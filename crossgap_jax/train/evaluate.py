"""The paper's three claims measured on a trained model, on held-out items only (the
controlled experiment's adapter: in-memory images and template captions).

Every comparison (baseline vs inverted numbers and their paired bootstrap interval) is
computed by :func:`crossgap_jax.pipeline.measure.compare_retrieval` /
:func:`~crossgap_jax.pipeline.measure.compare_zero_shot`, the functions behind
:func:`crossgap_jax.pipeline.measure.measure` (``reproduce``, ``classify``, the demo); what
stays here is the experiment's data (LabelledImages, held-out templates) and its
prompt-ensembled classifier.

:func:`evaluate_claims` computes, for one CLIP bundle:

1. **Image side**: image->image mAP vs OTI->image mAP (queries = held-out test images,
   gallery = training images, relevant = same class), and mAP after each recorded OTI step
   (the Figure-2 curve).
2. **Text side**: text->text mAP vs OVI->text mAP on held-out captions: captions written
   with templates never used in training. Queries are the captions of the first
   ``num_query_templates`` held-out templates (one per class each), the gallery the
   captions of the remaining held-out templates, relevant = same class (the COCO protocol's
   shape: first caption as query, the others as gallery).
3. **Zero-shot** classification of the test images: inter-modal (image features vs the
   text classifier, prompt-ensembled over the training templates) vs intra-modal (OTI
   features vs the text classifier; image features vs OVI-inverted classifier rows).
4. **Modality gap**: ``||mean(norm img) - mean(norm txt)||`` between the test images and a
   caption of each one's class (a held-out template), paired/unpaired cosine statistics,
   and the learned temperature.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossgap_jax import inversion
from crossgap_jax import retrieval as R
from crossgap_jax.models import CLIP
from crossgap_jax.pipeline import Bootstrap, compare_retrieval, compare_zero_shot
from crossgap_jax.retrieval import verdict
from crossgap_jax.train.augment import normalize
from crossgap_jax.train.data import LabelledImages, captions


def encode_images(clip: CLIP, data: LabelledImages, *, batch_size: int = 256,
                  progress: bool | None = None) -> np.ndarray:
    """``(N, embed_dim)`` features of the stored (centre-cropped) images, no augmentation."""
    feats = []
    for start in range(0, len(data), 4096):
        x = np.asarray(normalize(data.images[start:start + 4096], clip.config.mean,
                                 clip.config.std))
        feats.append(clip.encode_image(x, batch_size=batch_size, progress=progress))
    return np.concatenate(feats)


def encode_texts(clip: CLIP, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
    return clip.encode_text(clip.tokenize(list(texts)), batch_size=batch_size, progress=False)


_EVAL = {"backend": "numpy", "progress": False}


def _keep(m: dict) -> dict[str, float]:
    return {k: float(m[k]) for k in ("mAP", "mAP@R", "P@R", "R@1")}


def _map(q, g, ql, gl) -> dict[str, float]:
    """The metrics of one feature pair (the mAP-vs-step curves)."""
    return _keep(R.evaluate(q, g, (ql, gl), **_EVAL))


def evaluate_claims(
    clip: CLIP,
    train: LabelledImages,
    test: LabelledImages,
    train_templates: Sequence[str],
    heldout_templates: Sequence[str],
    *,
    num_query_templates: int = 1,
    oti_steps: int = 150,
    oti_record_steps: Sequence[int] = (),
    ovi_steps: int = 1000,
    ovi_record_steps: Sequence[int] = (),
    ovi_zero_shot: bool = True,
    oti_batch_size: int = 256,
    ovi_batch_size: int = 128,
    max_test_images: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Measure the three claims (see the module docstring).

    Args:
        clip: the model.
        train: gallery images (the training split).
        test: query images (held out from training).
        train_templates: the templates the model was trained with (zero-shot classifier).
        heldout_templates: templates never seen in training (text retrieval captions).
        num_query_templates: how many held-out templates give the query captions.
        oti_steps, ovi_steps: optimisation steps (paper: 150 and 1000); the headline
            numbers are at these steps.
        oti_record_steps, ovi_record_steps: extra steps at which features are recorded
            (mAP-vs-steps curves).
        ovi_zero_shot: also run OVI on the classifier rows (image vs OVI classifier).
        max_test_images: evaluate on a seeded random subset of N test images (quick runs).
        seed: OTI/OVI init seed.
        log: a callable for progress messages (None silences them).

    Returns:
        A nested dict of plain floats/lists (JSON-serialisable).
    """
    say = log or (lambda *a, **k: None)
    if max_test_images is not None and max_test_images < len(test):
        # A seeded random subset (quick runs only).
        order = np.random.default_rng(seed).permutation(len(test))[:max_test_images]
        test = test.subset(np.sort(order), test.name)
    classnames = list(train.classnames)
    out: dict[str, Any] = {"num_train": len(train), "num_test": len(test),
                           "num_classes": len(classnames),
                           "temperature": float(np.exp(-np.asarray(clip.params["logit_scale"])))}

    say("encoding images ...")
    f_train = encode_images(clip, train, progress=progress)
    f_test = encode_images(clip, test, progress=progress)

    # ---------------- 1. image side: image->image vs OTI->image -----------------------
    rec = tuple(sorted(set(int(s) for s in oti_record_steps if 1 <= s <= oti_steps)))
    say(f"OTI on {len(test)} test images ({oti_steps} steps) ...")
    res_oti = inversion.oti(clip, f_test, steps=oti_steps, record_steps=rec, seed=seed,
                            batch_size=oti_batch_size, progress=progress)
    boot = Bootstrap(seed=seed)
    c_img = compare_retrieval(f_test, res_oti.features, f_train, (test.labels, train.labels),
                              bootstrap=boot, **_EVAL)
    img2img, oti2img = _keep(c_img["baseline"]), _keep(c_img["inverted"])
    curve = [{"step": 0, "mAP": img2img["mAP"]}]
    for s in rec:
        if s != oti_steps:
            curve.append({"step": s, "mAP": _map(res_oti.features_at(s), f_train, test.labels,
                                                 train.labels)["mAP"]})
    curve.append({"step": oti_steps, "mAP": oti2img["mAP"]})
    loss_curve = res_oti.losses.mean(axis=1)
    delta_ci = c_img["ci95"]
    out["image"] = {"image->image": img2img, "OTI->image": oti2img, "oti_curve": curve,
                    "delta_mAP_ci95": delta_ci,
                    "oti_loss_first": float(loss_curve[0]),
                    "oti_loss_last": float(loss_curve[-1]),
                    "oti_loss_curve": [float(x) for x in loss_curve],
                    "oti_nonfinite": int(res_oti.nonfinite.sum()),
                    "oti_seconds": res_oti.seconds}

    # ---------------- 2. text side: text->text vs OVI->text --------------------------
    caps = captions(classnames, heldout_templates)  # [class][template]
    nq = num_query_templates
    q_text = [caps[c][t] for t in range(nq) for c in range(len(classnames))]
    q_lab = np.array([c for t in range(nq) for c in range(len(classnames))])
    g_text = [caps[c][t] for t in range(nq, len(heldout_templates))
              for c in range(len(classnames))]
    g_lab = np.array([c for t in range(nq, len(heldout_templates))
                      for c in range(len(classnames))])
    f_q = encode_texts(clip, q_text)
    f_g = encode_texts(clip, g_text)

    # Zero-shot classifier (ensemble of the training templates) and its OVI inversion.
    tr_caps = captions(classnames, train_templates)
    f_cls = encode_texts(clip, [c for row in tr_caps for c in row]).reshape(
        len(classnames), len(train_templates), -1)
    classifier = R.build_classifier(f_cls)

    targets = [f_q] + ([classifier] if ovi_zero_shot else [])
    ovi_targets = np.concatenate(targets)
    rec_v = tuple(sorted(set(int(s) for s in ovi_record_steps if 1 <= s <= ovi_steps)))
    say(f"OVI on {len(ovi_targets)} texts ({ovi_steps} steps) ...")
    res_ovi = inversion.ovi(clip, ovi_targets, steps=ovi_steps, record_steps=rec_v, seed=seed,
                            batch_size=ovi_batch_size, progress=progress)
    nqt = len(f_q)
    c_txt = compare_retrieval(f_q, res_ovi.features[:nqt], f_g, (q_lab, g_lab), bootstrap=boot,
                              **_EVAL)
    txt2txt, ovi2txt = _keep(c_txt["baseline"]), _keep(c_txt["inverted"])
    vcurve = [{"step": 0, "mAP": txt2txt["mAP"]}]
    for s in rec_v:
        if s != ovi_steps:
            vcurve.append({"step": s, "mAP": _map(res_ovi.features_at(s)[:nqt], f_g, q_lab,
                                                  g_lab)["mAP"]})
    vcurve.append({"step": ovi_steps, "mAP": ovi2txt["mAP"]})
    vloss = res_ovi.losses.mean(axis=1)
    out["text"] = {"text->text": txt2txt, "OVI->text": ovi2txt, "ovi_curve": vcurve,
                   "delta_mAP_ci95": c_txt["ci95"],
                   "num_queries": int(nqt), "num_gallery": len(g_text),
                   "query_templates": list(heldout_templates[:nq]),
                   "gallery_templates": list(heldout_templates[nq:]),
                   "ovi_loss_first": float(vloss[0]), "ovi_loss_last": float(vloss[-1]),
                   "ovi_nonfinite": int(res_ovi.nonfinite.sum()),
                   "ovi_seconds": res_ovi.seconds}

    # ---------------- 3. zero-shot: inter vs intra -----------------------------------
    c_oti = compare_zero_shot(f_test, classifier, res_oti.features, classifier, test.labels,
                              bootstrap=boot)
    zs = {"inter (image vs text classifier)": c_oti["baseline"]["top1"],
          "intra OTI (OTI(image) vs text classifier)": c_oti["inverted"]["top1"]}
    ci = {"intra OTI": c_oti["ci95"]}
    if ovi_zero_shot:
        ovi_cls = R.build_classifier(res_ovi.features[nqt:])
        c_ovi = compare_zero_shot(f_test, classifier, f_test, ovi_cls, test.labels,
                                  bootstrap=boot)
        zs["intra OVI (image vs OVI(text classifier))"] = c_ovi["inverted"]["top1"]
        ci["intra OVI"] = c_ovi["ci95"]
    out["zero_shot"] = {k: float(v) for k, v in zs.items()}
    out["zero_shot_delta_ci95"] = ci

    # ---------------- 4. modality gap ------------------------------------------------
    # A caption of each test image's class from the first held-out template.
    f_pair = f_q[:len(classnames)][test.labels]
    st = R.similarity_statistics(f_pair, f_test, paired=True)
    ii = R.similarity_statistics(f_test, None)
    tt = R.similarity_statistics(f_g, None)
    oi = R.similarity_statistics(res_oti.features, f_test, paired=True)
    out["gap"] = {
        "modality_gap": float(R.modality_gap(f_test, f_pair)),
        "modality_gap_oti": float(R.modality_gap(f_test, res_oti.features)),
        "cos_text_image_paired": float(st["paired"]["mean"]),
        "cos_text_image_unpaired": float(st["unpaired"]["mean"]),
        "cos_image_image": float(ii["unpaired"]["mean"]),
        "cos_text_text": float(tt["unpaired"]["mean"]),
        "cos_oti_image_paired": float(oi["paired"]["mean"]),
    }
    return out


def claim_verdicts(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per claim: the two numbers, the 95% interval of the difference (when computed),
    whether the paper's direction holds here, and whether the interval excludes 0."""
    i, t, z = res["image"], res["text"], res["zero_shot"]
    zci = res.get("zero_shot_delta_ci95", {})
    inter = z["inter (image vs text classifier)"]
    intra = z["intra OTI (OTI(image) vs text classifier)"]
    v = {
        "OTI improves image->image": {
            "baseline": i["image->image"]["mAP"], "inverted": i["OTI->image"]["mAP"],
            "holds": i["OTI->image"]["mAP"] > i["image->image"]["mAP"],
            "ci95": i.get("delta_mAP_ci95")},
        "OVI improves text->text": {
            "baseline": t["text->text"]["mAP"], "inverted": t["OVI->text"]["mAP"],
            "holds": t["OVI->text"]["mAP"] > t["text->text"]["mAP"],
            "ci95": t.get("delta_mAP_ci95")},
        "intra-modal zero-shot (OTI) is worse": {
            "baseline": inter, "inverted": intra, "holds": intra < inter,
            "ci95": zci.get("intra OTI")},
    }
    ovi_key = "intra OVI (image vs OVI(text classifier))"
    if ovi_key in z:
        v["intra-modal zero-shot (OVI) is worse"] = {
            "baseline": inter, "inverted": z[ovi_key], "holds": z[ovi_key] < inter,
            "ci95": zci.get("intra OVI")}
    for name, x in v.items():
        ci = x["ci95"]
        x["significant"] = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
        # One vocabulary everywhere (crossgap_jax.retrieval.stats.verdict).
        x["verdict"] = None if ci is None else verdict(ci, -1 if "worse" in name else 1)
    return v
