"""Revisitop (ROxford/RParis) protocol, zero-shot classification and modality-gap statistics."""

from __future__ import annotations

import math
import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import crossgap_jax.retrieval as R


def dyadic_unit_vectors(rng, n, dim=8, norm_sq=16):
    """Unit vectors with entries k/4: norms and dot products are exact in float32."""
    rows = []
    while sum(len(r) for r in rows) < n:
        cand = rng.integers(-4, 5, size=(100_000, dim))
        rows.append(cand[(cand**2).sum(1) == norm_sq])
    return (np.concatenate(rows)[:n] / np.sqrt(norm_sq)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# revisitop
# ---------------------------------------------------------------------------------------------


def hand_made_revisitop():
    """8 database images (+2 distractor columns 8, 9) and 2 queries with explicit rankings."""
    rankings = [
        [1, 3, 0, 5, 8, 6, 2, 7, 4, 9],  # query 0, best first
        [2, 6, 0, 1, 3, 4, 5, 7, 8, 9],  # query 1
    ]
    scores = np.zeros((2, 10), np.float32)
    for q, ranking in enumerate(rankings):
        scores[q, ranking] = np.arange(10, 0, -1) / 10  # distinct scores
    gnd = {
        "imlist": [f"img{i}" for i in range(8)],
        "qimlist": ["qa", "qb"],
        "gnd": [
            {"easy": [0, 2], "hard": [1, 4], "junk": [5], "bbx": [0, 0, 10, 10]},
            {"easy": [6], "hard": [], "junk": [], "bbx": [1, 1, 5, 5]},
        ],
    }
    return scores, gnd


# Expected values, derived by hand. AP adds, per positive j (0-based) at 0-based position r of
# the junk-free ranking, (p0 + p1) / (2 n) with p0 = 1 if r == 0 else j / r, p1 = (j+1)/(r+1).
# mP@k = #{positives at 1-based position <= k'} / k' with k' = min(k, position of the last one).
#
# Query 0, ranking 1 3 0 5 8 6 2 7 4 9; easy {0,2}, hard {1,4}, junk {5}.
#  Easy   (pos {0,2}, junk {5,1,4}): junk-free 3 0 8 6 2 7 9 -> r = 1, 4
#         AP = [(0 + 1/2) + (1/4 + 2/5)] / 4 = 1.15 / 4 = 0.2875
#         positions 2, 5: P@1 = 0/1, P@5 = 2/5, P@10 -> k' = 5: 2/5
#  Medium (pos {0,1,2,4}, junk {5}): junk-free 1 3 0 8 6 2 7 4 9 -> r = 0, 2, 5, 7
#         AP = [2 + (1/2 + 2/3) + (2/5 + 3/6) + (3/7 + 4/8)] / 8
#         positions 1, 3, 6, 8: P@1 = 1, P@5 = 2/5, P@10 -> k' = 8: 4/8
#  Hard   (pos {1,4}, junk {5,0,2}): junk-free 1 3 8 6 7 4 9 -> r = 0, 5
#         AP = [2 + (1/5 + 2/6)] / 4; positions 1, 6: P@1 = 1, P@5 = 1/5, P@10 -> k' = 6: 2/6
# Query 1, ranking 2 6 0 ...; easy {6}, no hard, no junk.
#  Easy = Medium: r = 1 -> AP = (0 + 1/2) / 2 = 0.25; position 2: P@1 = 0, P@5 = P@10 = 1/2
#  Hard: no positive -> left out of the Hard means and counted.
AP0_MEDIUM = (2 + (1 / 2 + 2 / 3) + (2 / 5 + 3 / 6) + (3 / 7 + 4 / 8)) / 8
EXPECTED = {
    "mAP_easy": 100 * (0.2875 + 0.25) / 2,
    "mAP_medium": 100 * (AP0_MEDIUM + 0.25) / 2,
    "mAP_hard": 100 * (2 + 1 / 5 + 2 / 6) / 4,
    "mP@1_easy": 0.0, "mP@5_easy": 100 * (2 / 5 + 1 / 2) / 2, "mP@10_easy": 100 * (0.4 + 0.5) / 2,
    "mP@1_medium": 100 * (1 + 0) / 2, "mP@5_medium": 100 * (2 / 5 + 1 / 2) / 2,
    "mP@10_medium": 100 * (4 / 8 + 1 / 2) / 2,
    "mP@1_hard": 100.0, "mP@5_hard": 100 * 1 / 5, "mP@10_hard": 100 * 2 / 6,
    "num_skipped_easy": 0, "num_skipped_medium": 0, "num_skipped_hard": 1, "num_queries": 2,
}


def test_revisitop_hand_made():
    scores, gnd = hand_made_revisitop()
    res = R.revisitop_metrics(scores, gnd)
    assert set(res) == set(EXPECTED)
    for key, want in EXPECTED.items():
        assert res[key] == pytest.approx(want, abs=1e-10), key
    # the list alone (what the pickle's "gnd" key holds) gives the same numbers
    assert R.revisitop_metrics(scores, gnd["gnd"]) == res


def test_revisitop_positive_listed_as_junk_stays_positive():
    # image 0 is both easy and junk (not the case in the real files): it stays a positive;
    # image 1 is junk only. Ranking 1 0 2 -> junk-free 0 2 -> the positive is first: AP 1.
    scores = np.array([[0.5, 0.9, 0.1]], np.float32)
    gnd = [{"easy": [0], "hard": [], "junk": [0, 1]}]
    res = R.revisitop_metrics(scores, gnd)
    assert res["mAP_easy"] == res["mAP_medium"] == 100.0
    assert res["num_skipped_hard"] == 1


def test_revisitop_pickle_loader_and_dict_structure(tmp_path):
    scores, gnd = hand_made_revisitop()
    path = tmp_path / "gnd_roxford5k.pkl"
    with open(path, "wb") as f:
        pickle.dump(gnd, f)
    cfg = R.load_revisitop_gnd(path)
    assert cfg["imlist"] == gnd["imlist"] and cfg["qimlist"] == gnd["qimlist"]
    assert cfg["gnd"][0]["easy"].dtype == np.int64 and cfg["gnd"][1]["hard"].size == 0
    np.testing.assert_array_equal(cfg["gnd"][0]["bbx"], [0, 0, 10, 10])
    # The authors' code iterates the loaded dict itself (len() == 3 keys, gnd[0] -> KeyError);
    # here the dict is unwrapped to its per-query list.
    assert len(cfg) >= 3 and len(R.revisitop_gnd_list(cfg)) == 2
    assert R.revisitop_metrics(scores, cfg) == R.revisitop_metrics(scores, gnd)
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"imlist": [], "qimlist": []}, f)
    with pytest.raises(ValueError, match="gnd"):
        R.load_revisitop_gnd(bad)
    with pytest.raises(ValueError, match="'gnd' key"):
        R.revisitop_metrics(scores, {"imlist": gnd["imlist"]})
    with pytest.raises(ValueError, match="gnd entries"):
        R.revisitop_metrics(scores[:1], gnd)
    with pytest.raises(ValueError, match="imlist"):
        R.revisitop_metrics(scores[:, :7], gnd)


def reference_revisitop(scores, gnd, ks=(1, 5, 10)):
    """Loop implementation written from the protocol description (ranking lists, no ranks)."""
    protocols = {"easy": (["easy"], ["junk", "hard"]), "medium": (["easy", "hard"], ["junk"]),
                 "hard": (["hard"], ["junk", "easy"])}
    out = {}
    for name, (pos_keys, junk_keys) in protocols.items():
        aps, precs = [], []
        for q, g in enumerate(gnd):
            ok = set().union(*(set(g[k]) for k in pos_keys))
            junk = set().union(*(set(g[k]) for k in junk_keys)) - ok
            if not ok:
                continue
            ranking = [i for i in np.argsort(-scores[q], kind="stable") if i not in junk]
            positions = [r for r, i in enumerate(ranking) if i in ok]
            ap = 0.0
            for j, r in enumerate(positions):
                p0 = 1.0 if r == 0 else j / r
                ap += (p0 + (j + 1) / (r + 1)) / (2 * len(ok))
            aps.append(ap)
            last = positions[-1] + 1
            precs.append([sum(r + 1 <= min(k, last) for r in positions) / min(k, last)
                          for k in ks])
        out[f"mAP_{name}"] = 100 * np.mean(aps)
        for t, k in enumerate(ks):
            out[f"mP@{k}_{name}"] = 100 * np.mean([p[t] for p in precs])
    return out


def test_revisitop_random_against_reference_and_features():
    rng = np.random.default_rng(0)
    num_db, num_q = 60, 9
    gnd = []
    for _ in range(num_q):
        perm = rng.permutation(num_db)
        sizes = rng.integers(0, 6, 3)
        easy, hard, junk = np.split(perm[: sizes.sum()], np.cumsum(sizes)[:2])
        gnd.append({"easy": easy, "hard": hard, "junk": junk})
    gnd[0]["easy"] = np.array([1, 2])  # at least one positive somewhere
    scores = rng.uniform(-1, 1, size=(num_q, num_db + 5)).astype(np.float32)  # 5 distractors
    got = R.revisitop_metrics(scores, gnd)
    want = reference_revisitop(scores, gnd)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-10), key
    # features path; dyadic unit vectors (entries k/4, sum of squares 1) make every score
    # exact, so the chunked feature path must equal the score path bit for bit (ties included)
    feats = dyadic_unit_vectors(rng, num_q + num_db + 5)
    q, g = feats[:num_q], feats[num_q:]
    from_features = R.revisitop_evaluate(q * 4, g, gnd, chunk_size=4)
    from_scores = R.revisitop_metrics(q @ g.T, gnd)
    for key in from_scores:
        assert from_features[key] == pytest.approx(from_scores[key], abs=1e-10), key
    summary, per_query = R.revisitop_evaluate(q, g, gnd, return_per_query=True)
    assert per_query["medium"]["AP"].shape == (num_q,)
    assert per_query["medium"]["P"].shape == (num_q, 3)


# ---------------------------------------------------------------------------------------------
# zero-shot classification
# ---------------------------------------------------------------------------------------------


def test_build_classifier_prompt_ensembling():
    s = 1 / math.sqrt(2)
    emb = np.array([
        [[2, 0, 0], [0, 3, 0]],  # class 0: e1, e2 -> mean (1/2, 1/2, 0) -> (s, s, 0)
        [[0, 0, 1], [0, 0, 2]],  # class 1: e3, e3 -> e3
        [[-1, 0, 0], [0, -1, 0]],  # class 2: -(s, s, 0)
    ], np.float32)
    want = np.array([[s, s, 0], [0, 0, 1], [-s, -s, 0]])
    np.testing.assert_allclose(R.build_classifier(emb), want, atol=1e-7)
    np.testing.assert_allclose(np.asarray(R.build_classifier(jnp.asarray(emb))), want, atol=1e-7)
    # varying number of prompts per class, and a single (C, D) matrix
    ragged = [emb[0], emb[1][0], emb[2]]
    np.testing.assert_allclose(R.build_classifier(ragged), want, atol=1e-7)
    np.testing.assert_allclose(R.build_classifier(want * 3), want, atol=1e-7)
    with pytest.raises(ValueError):
        R.build_classifier(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError):
        R.build_classifier([np.ones(3), np.ones(4)])


def test_zero_shot_accuracy_hand_made():
    s = 1 / math.sqrt(2)
    classifier = np.array([[s, s, 0], [0, 0, 1], [-s, -s, 0]], np.float32)
    features = np.array([
        [1, 0.2, 0],  # label 0: scores ~ (+, 0, -) -> rank 1
        [0, 0, 1],  # label 1: rank 1
        [1, 1, 0.1],  # label 1: class 0 scores 1.41, class 1 0.1 -> rank 2
        [0.3, 0.3, 1],  # label 2: class 2 is last -> rank 3
    ], np.float32)
    labels = np.array([0, 1, 1, 2])
    np.testing.assert_array_equal(R.class_ranks(features, classifier, labels), [1, 1, 2, 3])
    res = R.zero_shot_accuracy(features, classifier, labels, ks=(1, 2, 3))
    assert res == {"top1": 50.0, "top2": 75.0, "top3": 100.0, "num_samples": 4}
    np.testing.assert_array_equal(R.zero_shot_predict(features, classifier, k=1)[:, 0],
                                  [0, 1, 0, 1])
    # the intra-modal variants are the same call: JAX features (e.g. OTI outputs) work too
    res_jax = R.zero_shot_accuracy(jnp.asarray(features), jnp.asarray(classifier), labels,
                                   ks=(1, 2, 3))
    assert res_jax == res
    # an all-tied sample: pessimistic rank 3, optimistic rank 1. The tie must be exact under
    # any summation order: with a one-hot classifier each score is one feature entry times
    # 1 plus exact zeros, and equal entries stay equal after normalisation.
    tied = np.array([[1, 1, 1]], np.float32)
    eye = np.eye(3, dtype=np.float32)
    assert R.class_ranks(tied, eye, np.array([1]))[0] == 3
    assert R.class_ranks(tied, eye, np.array([1]), ties="optimistic")[0] == 1
    with pytest.raises(ValueError, match="labels"):
        R.zero_shot_accuracy(features, classifier, np.array([0, 1, 1, 3]))
    with pytest.raises(ValueError, match="labels"):
        R.zero_shot_accuracy(features, classifier, labels[:3])


# ---------------------------------------------------------------------------------------------
# modality gap
# ---------------------------------------------------------------------------------------------


def test_modality_gap_known_answer():
    a = np.array([[3, 0, 0], [0, 1, 0]], np.float32)  # normalised mean (1/2, 1/2, 0)
    b = np.array([[0, 0, 1], [0, 0, 0.5]], np.float32)  # normalised mean (0, 0, 1)
    assert R.modality_gap(a, b) == pytest.approx(math.sqrt(0.25 + 0.25 + 1))
    assert R.modality_gap(a, a) == 0.0


def test_similarity_statistics_self_pairs():
    a = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    # distinct ordered pairs: cos 90 deg four times, cos 180 deg twice -> {-1, -1, 0, 0, 0, 0}
    st = R.similarity_statistics(a, percentiles=(5, 50, 100), bins=4)
    u = st["unpaired"]
    assert u["count"] == 6
    assert u["mean"] == pytest.approx(-1 / 3)
    assert u["std"] == pytest.approx(math.sqrt(2) / 3)  # E[x^2] - mean^2 = 1/3 - 1/9
    for p, want in {5: -1.0, 50: 0.0, 100: 0.0}.items():
        assert u["percentiles"][float(p)] == pytest.approx(want, abs=1e-4)
    np.testing.assert_array_equal(u["histogram"], [2, 0, 4, 0])  # bins of width 0.5 from -1
    np.testing.assert_allclose(st["bin_edges"], [-1, -0.5, 0, 0.5, 1])
    assert st["paired"] is None and st["gap"] is None


def test_similarity_statistics_paired_known_answer():
    s = 1 / math.sqrt(2)
    a = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    b = np.array([[1, 0], [1, 1], [0, 1]], np.float32)
    st = R.similarity_statistics(a, b, percentiles=(50,))
    # paired cosines 1, s, 0
    assert st["paired"]["mean"] == pytest.approx((1 + s) / 3)
    assert st["paired"]["percentiles"][50.0] == pytest.approx(s)
    # unpaired (i != j): a0.b1 = s, a0.b2 = 0, a1.b0 = 0, a1.b2 = 1, a2.b0 = -1, a2.b1 = -s
    assert st["unpaired"]["count"] == 6 and st["unpaired"]["mean"] == pytest.approx(0, abs=1e-7)
    np.testing.assert_allclose(R.paired_similarities(a, b), [1, s, 0], atol=1e-7)
    # gap: mean(a) = (0, 1/3), mean(b) = ((1 + s) / 3, (s + 1) / 3)
    m = (1 + s) / 3
    assert st["gap"] == pytest.approx(math.hypot(m, m - 1 / 3), abs=1e-7)


def test_similarity_statistics_against_full_matrix():
    rng = np.random.default_rng(1)
    # dyadic unit vectors: exact dot products, so histogram counts must match exactly
    x = rng.integers(-3, 4, size=(40_000, 4)).astype(np.float32)
    x = x[(x**2).sum(1) == 4][:120]  # norm 2 -> entries /2 are exact unit vectors
    img, txt = x[:60] / 2, x[60:120] / 2
    st = R.similarity_statistics(txt, img, bins=16, chunk_size=7)
    full = (txt @ img.T).astype(np.float64)
    off = full[~np.eye(60, dtype=bool)]
    assert st["unpaired"]["count"] == off.size
    assert st["unpaired"]["mean"] == pytest.approx(off.mean(), abs=1e-12)
    assert st["unpaired"]["std"] == pytest.approx(off.std(), abs=1e-12)
    np.testing.assert_array_equal(st["unpaired"]["histogram"],
                                  np.histogram(off, bins=16, range=(-1, 1))[0])
    for p, v in st["unpaired"]["percentiles"].items():
        assert v == pytest.approx(np.percentile(off, p), abs=1e-4)
    np.testing.assert_allclose(st["paired"]["mean"], np.diag(full).mean(), atol=1e-12)
    dist = R.similarity_distributions(img, txt, inverted=txt * 2)
    assert set(dist) == {"image-image", "text-image", "inverted-image"}
    assert dist["image-image"]["paired"] is None
    assert dist["inverted-image"]["gap"] == pytest.approx(st["gap"])
