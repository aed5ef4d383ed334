"""The authors' assets: summary pickles read without executing code, coverage checks,
20 Newsgroups class descriptions parsed (never imported), and ``reproduce`` using them.

Every asset here is made up by the test in the authors' format (PAPER.md, "Authors'
assets"); no text of the authors' repository is used.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

import crossgap_jax.data as cgd
from crossgap_jax.cli import main
from crossgap_jax.data import authors_assets as aa
from crossgap_jax.models import load_clip
from crossgap_jax.pipeline.store import load_features

MODEL_DIR = "meta-llama_Llama-3.2-1B-Instruct"
GROUPS = sorted(cgd.NEWSGROUP_DESCRIPTIONS)  # the 20 newsgroup folder names


def _write_pickle(path, obj, protocol=pickle.HIGHEST_PROTOCOL) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return str(path)


def _summary_path(checkout, folder, split):
    return os.path.join(checkout, "data", "summarized_texts", folder, split, MODEL_DIR,
                        "summarized_text.pkl")


class _Instance:  # a class instance: needs find_class to be rebuilt
    def __init__(self):
        self.text = "x"


class _Payload:  # unpickling it calls open(marker, "w"): creates the marker file
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ------------------------------------------------------------------ the summary reader


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_read_summaries_authors_format(tmp_path, protocol):
    by_index = {str(i): f"summary number {i} \u00e9\u2603" for i in range(30)}
    by_id = {"doc-7": "first", "31415": "second", "MED-10": ""}
    for name, obj in (("index.pkl", by_index), ("id.pkl", by_id)):
        path = _write_pickle(tmp_path / name, obj, protocol)
        got = aa.read_summaries(path)
        assert got == obj and list(got) == list(obj)


def test_read_summaries_int_keys_become_decimal_strings(tmp_path):
    path = _write_pickle(tmp_path / "s.pkl", {0: "a", 17: "b"})
    assert aa.read_summaries(path) == {"0": "a", "17": "b"}


def test_reduce_payload_is_refused_and_not_executed(tmp_path):
    # The payload is real: a plain unpickler runs it (creates the control marker).
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps({"0": _Payload(str(control))}))["0"].close()
    assert control.exists()
    marker = tmp_path / "marker"
    path = _write_pickle(tmp_path / "evil.pkl", {"0": "fine", "1": _Payload(str(marker))})
    with pytest.raises(aa.AuthorsAssetsError,
                       match=r"evil\.pkl: refused: the pickle refers to io\.open"):
        aa.read_summaries(path)
    assert not marker.exists()


@pytest.mark.parametrize("make, what", [
    (lambda: {"0": _Instance()}, "_Instance"),
    (lambda: {"0": np.zeros(3)}, "numpy"),
    (lambda: {"0": ("a", "b")}, "tuple"),
    (lambda: {"0": b"bytes"}, "bytes"),
    (lambda: {"0": 1.5}, "float"),
    (lambda: {"0": True}, "bool"),
    (lambda: {"0": None}, "NoneType"),
    (lambda: {"0": {"a", "b"}}, "set"),
])
def test_other_types_are_refused(tmp_path, make, what):
    path = _write_pickle(tmp_path / "bad.pkl", make())
    with pytest.raises(aa.AuthorsAssetsError, match="bad.pkl") as e:
        aa.read_summaries(path)
    assert what in str(e.value)


@pytest.mark.parametrize("obj, msg", [
    (["a", "b"], "top level is a list"),
    ("text", "top level is a str"),
    ({"0": ["a list", "of str"]}, "value of key '0' is a list"),
    ({"0": 3}, "value of key '0' is a int"),
    ({1: "a", "1": "b"}, "collide"),
])
def test_wrong_shapes_are_refused(tmp_path, obj, msg):
    path = _write_pickle(tmp_path / "shape.pkl", obj)
    with pytest.raises(aa.AuthorsAssetsError, match=msg):
        aa.read_summaries(path)


def test_not_a_pickle(tmp_path):
    p = tmp_path / "garbage.pkl"
    p.write_bytes(b"this is not a pickle")
    with pytest.raises(aa.AuthorsAssetsError, match="garbage.pkl"):
        aa.read_summaries(p)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(aa.AuthorsAssetsError, match="empty.pkl: not a readable pickle"):
        aa.read_summaries(tmp_path / "empty.pkl")


# ------------------------------------------------------------------ locating, coverage


def test_find_summaries_dir_accepts_checkout_data_and_folder(tmp_path):
    co = tmp_path / "authors_repo"
    _write_pickle(_summary_path(co, "NanoNQ", "gallery"), {"a": "b"})
    want = str(co / "data" / "summarized_texts")
    for given in (co, co / "data", co / "data" / "summarized_texts"):
        assert aa.find_summaries_dir(given) == want
        assert aa.find_checkout_root(given) == str(co)
    assert aa.summary_file(co, "nanonq").endswith(
        f"summarized_texts/NanoNQ/gallery/{MODEL_DIR}/summarized_text.pkl")
    with pytest.raises(aa.AuthorsAssetsError,
                       match="nanoscifact: the authors. summary file is missing: .*NanoSciFact"):
        aa.summary_file(co, "nanoscifact")
    with pytest.raises(aa.AuthorsAssetsError, match="no summarized_texts folder"):
        aa.find_summaries_dir(tmp_path)
    with pytest.raises(aa.AuthorsAssetsError, match="not a folder"):
        aa.find_summaries_dir(tmp_path / "nope")


def _corpus(ids):
    return cgd.TextSplit(name="nanonq", split="corpus", items=list(ids),
                         texts=[f"raw {i}" for i in ids])


def test_coverage_missing_and_extra_keys():
    spec = aa.SUMMARY_SPECS["nanonq"]
    split = _corpus([f"d{i}" for i in range(10)])
    full = {f"d{i}": f"sum {i}" for i in range(10)}
    assert aa.summary_replacements(split, full, spec, "f.pkl") == full
    partial = {k: v for k, v in full.items() if k not in ("d2", "d5", "d9")}
    with pytest.raises(aa.AuthorsAssetsError,
                       match=r"3 of 10 gallery items have no summary in f\.pkl; first missing "
                             r"keys: 'd2', 'd5', 'd9'"):
        aa.summary_replacements(split, partial, spec, "f.pkl")
    with pytest.raises(aa.AuthorsAssetsError, match="1 keys that are no gallery item.*'zz'"):
        aa.summary_replacements(split, dict(full, zz="?"), spec, "f.pkl")


def test_index_keys_follow_the_reader_order():
    spec = aa.SUMMARY_SPECS["newsgroup_text"]
    split = cgd.TextSplit(name="newsgroup_text", split="test", items=["t/b/9", "t/a/3", "t/c/1"],
                          texts=["x", "y", "z"])
    got = aa.summary_replacements(split, {"0": "s0", "1": "s1", "2": "s2"}, spec, "f")
    assert got == {"t/b/9": "s0", "t/a/3": "s1", "t/c/1": "s2"}
    imdb = aa.SUMMARY_SPECS["imdb_text"]
    csv_split = cgd.TextSplit(name="imdb_text", split="all", items=["row00000", "row00001"],
                              texts=["a", "b"])
    assert aa.summary_replacements(csv_split, {"0": "A", "1": "B"}, imdb, "f") == {
        "row00000": "A", "row00001": "B"}
    folder_split = cgd.TextSplit(name="imdb_text", split="all", items=["train/neg/0_3.txt"],
                                 texts=["a"])
    with pytest.raises(aa.AuthorsAssetsError, match="IMDB_Dataset.csv"):
        aa.summary_replacements(folder_split, {"0": "A"}, imdb, "f")


def test_real_20newsgroups_coverage(shared_data, tmp_path):
    if not (shared_data / "20newsgroups" / "20news-bydate-test").is_dir():
        pytest.skip("20newsgroups test split not in the shared data")
    co = tmp_path / "co"
    n = 7532  # the authors' 20NG summary file size (PAPER.md)
    path = _write_pickle(_summary_path(co, "newsgroup_text", "test"),
                         {str(i): f"s{i}" for i in range(n) if i != 4321})
    split = cgd.get_dataset("newsgroup_text", shared_data, "test")
    with pytest.raises(aa.AuthorsAssetsError, match=r"1 of 7532 .* '4321' \(test/"):
        aa.apply_authors_assets_to_split(split, "newsgroup_text", co)
    _write_pickle(path, {str(i): f"s{i}" for i in range(n)})
    out, rec = aa.apply_authors_assets_to_split(split, "newsgroup_text", co)
    assert out.texts[0] == "s0" and out.texts[-1] == f"s{n - 1}" and out.items == split.items
    assert rec == {"texts": f"LLM summaries (authors' assets: {path})", "file": path}


# ------------------------------------------------------------------ 20NG descriptions

def _made_up_descriptions(order):
    return {g: f"made-up description number {i} for the group {g}" for i, g in enumerate(order)}


def _write_module(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _fake_checkout(co, order, marker=None):
    """A checkout with a 20NG module (a dict literal named class_to_template), an IMDB-like
    module with its own class_to_template (ignored), and code that must never run."""
    desc = _made_up_descriptions(order)
    trap = f"open({str(marker)!r}, 'w')\n" if marker else "pass\n"
    _write_module(os.path.join(co, "src", "datasets", "newsgroup.py"),
                  "import os\n" + trap + f"class_to_template = {desc!r}\n"
                  "def unused():\n    return class_to_template\n")
    _write_module(os.path.join(co, "src", "datasets", "imdb.py"),
                  trap + "class_to_template = {'positive': 'p', 'negative': 'n'}\n")
    return desc


def test_read_class_descriptions_order_and_no_execution(tmp_path):
    co = tmp_path / "co"
    order = GROUPS[7:] + GROUPS[:7][::-1]
    marker = tmp_path / "imported"
    desc = _fake_checkout(co, order, marker)
    got, where = aa.read_class_descriptions(co, GROUPS)
    assert list(got) == order and got == desc
    assert where.endswith("newsgroup.py:3")
    assert not marker.exists()
    # The same from the summaries folder of that checkout.
    os.makedirs(co / "data" / "summarized_texts" / "newsgroup_text")
    assert aa.read_class_descriptions(co / "data" / "summarized_texts", GROUPS)[0] == desc


def test_newsgroup_queries_labels_are_sklearn_target_names(tmp_path):
    sk = pytest.importorskip("sklearn.datasets")
    # A miniature bydate test folder; sklearn's load_files gives target_names.
    folder = tmp_path / "20newsgroups" / "20news-bydate-test"
    for g in GROUPS:
        _write_module(str(folder / g / "1"), f"From: x\n\nabout {g}\n")
    target_names = sk.load_files(str(folder), encoding="latin1").target_names
    order = GROUPS[::-1]
    co = tmp_path / "co"
    desc = _fake_checkout(co, order)
    task = cgd.get_task("newsgroup_text", tmp_path)
    assert task.gallery.classnames == target_names
    new, rec = aa.apply_authors_assets(task, None)
    assert new.query.texts == [cgd.NEWSGROUP_DESCRIPTIONS[g] for g in GROUPS]
    assert rec["comparable_with_paper"] is False and "our query wording" in rec["queries"]
    _write_pickle(_summary_path(co, "newsgroup_text", "test"),
                  {str(i): f"summary {i}" for i in range(20)})
    new, rec = aa.apply_authors_assets(task, co)
    assert new.query.items == [f"query/{g}" for g in order]
    assert new.query.texts == [desc[g] for g in order]
    assert new.query.labels.tolist() == [target_names.index(g) for g in order]
    assert rec["comparable_with_paper"] is True and rec["queries_file"].endswith(
        "newsgroup.py:3")
    # Relevance still pairs a description with its newsgroup's posts.
    for i, g in enumerate(order):
        pos = new.positives(i)
        assert [new.gallery.items[j].split("/")[1] for j in pos] == [g]
    assert new.gallery.texts == [f"summary {i}" for i in range(20)]


@pytest.mark.parametrize("module, msg", [
    ("class_to_template = {}\n", "no 'class_to_template"),
    ("x = 1\n", "no 'class_to_template"),
    ("class_to_template = dict(a=1)\n", "not a dict literal"),
    ("class_to_template = {k: k for k in NAMES}\n", "not a dict literal"),
])
def test_descriptions_missing_or_not_literal(tmp_path, module, msg):
    _write_module(str(tmp_path / "co" / "ng.py"), module)
    with pytest.raises(aa.AuthorsAssetsError, match=msg):
        aa.read_class_descriptions(tmp_path / "co", GROUPS)


def test_descriptions_incomplete_or_conflicting(tmp_path):
    co = tmp_path / "co"
    partial = _made_up_descriptions(GROUPS[:19])
    _write_module(str(co / "a.py"), f"class_to_template = {partial!r}\n")
    with pytest.raises(aa.AuthorsAssetsError, match=r"a\.py:1: 1 newsgroups missing "
                                                    r"\['talk\.religion\.misc'\]"):
        aa.read_class_descriptions(co, GROUPS)
    full = _made_up_descriptions(GROUPS)
    _write_module(str(co / "a.py"), f"class_to_template = {full!r}\n")
    other = dict(full, **{GROUPS[0]: "another wording"})
    _write_module(str(co / "b.py"), f"class_to_template: dict = {other!r}\n")
    with pytest.raises(aa.AuthorsAssetsError, match="several different"):
        aa.read_class_descriptions(co, GROUPS)


# ------------------------------------------------------------------ end to end




def _mini_scifact(root):
    d = root / "NanoSciFact"
    os.makedirs(d / "qrels")
    ids = [f"{100 + i}" for i in range(12)]
    with open(d / "corpus.jsonl", "w") as f:
        for i, x in enumerate(ids):
            f.write(json.dumps({"_id": x, "title": "", "text": f"raw document {i} about "
                                f"{['cells', 'proteins', 'genes'][i % 3]}"}) + "\n")
    with open(d / "queries.jsonl", "w") as f:
        for q in range(3):
            f.write(json.dumps({"_id": f"q{q}", "text": f"question {q}"}) + "\n")
    with open(d / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in range(3):
            for x in ids[q::3]:
                f.write(f"q{q}\t{x}\t1\n")
    return ids


def _cached(run_dir, dataset, split):
    files = sorted((run_dir / "features" / dataset).glob(f"{split}-text-*.npz"))
    return [load_features(str(p)) for p in files]


def _direct(clip, texts):
    return clip.encode_text(clip.tokenize(texts), progress=False)


@pytest.mark.slow
def test_reproduce_uses_the_summaries(tiny_ckpt, tmp_path):
    root = tmp_path / "data"
    ids = _mini_scifact(root)
    co = tmp_path / "authors"
    summaries = {x: f"short summary {k} of a paper on {['mice', 'stars', 'rocks'][k % 3]}"
                 for k, x in enumerate(ids)}
    pkl = _write_pickle(_summary_path(co, "NanoSciFact", "gallery"), summaries, protocol=4)
    run_dir = tmp_path / "run"
    common = ["--quiet", "reproduce", "--datasets", "nanoscifact", "--model", "tiny",
              "--checkpoint", tiny_ckpt, "--data-root", str(root), "--run-dir", str(run_dir),
              "--batch-size", "8", "--ovi-steps", "2"]
    clip = load_clip("tiny", tiny_ckpt)
    raw = cgd.get_dataset("nanoscifact", root, "corpus")

    # Without assets: raw texts, labelled as such.
    assert main(common) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    src = m["datasets"]["nanoscifact"]["text_source"]
    assert src == {"gallery": "raw text (the paper used summaries)", "gallery_file": None}
    assert "`nanoscifact`: gallery texts: raw text (the paper used summaries)" in (
        run_dir / "table.md").read_text()
    (fs_raw,) = _cached(run_dir, "nanoscifact", "corpus")
    np.testing.assert_allclose(fs_raw.features, _direct(clip, raw.texts), atol=1e-5)

    # With assets, same run folder: the gallery encoded is the summaries (not the cache).
    assert main([*common, "--authors-assets", str(co)]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    label = f"LLM summaries (authors' assets: {pkl})"
    assert m["datasets"]["nanoscifact"]["text_source"] == {"gallery": label,
                                                           "gallery_file": pkl}
    assert m["datasets"]["nanoscifact"]["baseline"]["text_source"]["gallery"] == label
    assert m["config"]["authors_assets"] == str(co)
    assert f"`nanoscifact`: gallery texts: {label}" in (run_dir / "table.md").read_text()
    cached = {fs.meta["texts_sha256"]: fs for fs in _cached(run_dir, "nanoscifact", "corpus")}
    assert len(cached) == 2
    (fs_sum,) = [fs for fs in cached.values() if fs.meta != fs_raw.meta]
    assert fs_sum.items == raw.items
    want = _direct(clip, [summaries[x] for x in fs_sum.items])
    np.testing.assert_allclose(fs_sum.features, want, atol=1e-5)
    assert np.abs(fs_sum.features - fs_raw.features).max() > 1e-2  # they differ
    # The queries were not touched.
    (q,) = _cached(run_dir, "nanoscifact", "queries")
    np.testing.assert_allclose(q.features, _direct(clip, ["question 0", "question 1",
                                                          "question 2"]), atol=1e-5)
    # The reported text->text mAP is the one of the summary features (brute force).
    qrels = {f"q{k}": set(ids[k::3]) for k in range(3)}
    want_map = _brute_force_map(q.features, q.items, fs_sum.features, fs_sum.items, qrels)
    assert abs(m["datasets"]["nanoscifact"]["baseline"]["mAP"] - want_map) < 1e-4
    raw_map = _brute_force_map(q.features, q.items, fs_raw.features, fs_raw.items, qrels)
    assert abs(want_map - raw_map) > 1e-3  # the check can tell the two apart

    # encode and retrieve use them too.
    run2 = tmp_path / "run2"
    base = ["--model", "tiny", "--checkpoint", tiny_ckpt, "--data-root", str(root),
            "--run-dir", str(run2), "--batch-size", "8", "--authors-assets", str(co)]
    assert main(["--quiet", "encode", "--dataset", "nanoscifact", "--split", "corpus",
                 *base]) == 0
    (enc,) = _cached(run2, "nanoscifact", "corpus")
    np.testing.assert_allclose(enc.features, want, atol=1e-5)
    assert main(["--quiet", "retrieve", "--dataset", "nanoscifact", *base]) == 0
    (rj,) = (run2 / "records").glob("retrieve-*.json")
    r = json.loads(rj.read_text())["results"]
    assert r["text_source"]["gallery"] == label and abs(r["mAP"] - want_map) < 1e-4


def _brute_force_map(qf, q_items, gf, g_items, qrels):
    """mAP (percent) over the whole ranking: mean over relevant items of precision@rank."""
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    aps = []
    for i, qi in enumerate(q_items):
        order = np.argsort(-(gn @ qn[i]), kind="stable")
        hits, precisions = 0, []
        for rank, j in enumerate(order, 1):
            if g_items[j] in qrels[qi]:
                hits += 1
                precisions.append(hits / rank)
        aps.append(np.mean(precisions))
    return 100.0 * float(np.mean(aps))


def test_reproduce_refuses_uncovered_gallery_before_compute(tiny_ckpt, tmp_path, capsys):
    root = tmp_path / "data"
    ids = _mini_scifact(root)
    co = tmp_path / "authors"
    pkl = _write_pickle(_summary_path(co, "NanoSciFact", "gallery"),
                        {x: "s" for x in ids[:-2]})
    run_dir = tmp_path / "run"
    argv = ["--quiet", "reproduce", "--datasets", "nanoscifact", "--model", "tiny",
            "--checkpoint", tiny_ckpt, "--data-root", str(root), "--run-dir", str(run_dir),
            "--authors-assets", str(co)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"2 of 12 gallery items have no summary in {pkl}" in err and "'110'" in err
    assert not (run_dir / "features").exists()
    _write_pickle(pkl, {"0": _Payload(str(tmp_path / "marker"))})
    assert main(argv) == 2
    assert "refused" in capsys.readouterr().err and not (tmp_path / "marker").exists()
    assert main([*argv[:-1], str(tmp_path / "nothing")]) == 2
    assert "--authors-assets" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_20newsgroups_queries_and_labels(tiny_ckpt, tmp_path):
    root = tmp_path / "data"
    folder = root / "20newsgroups" / "20news-bydate-test"
    for g in GROUPS:
        for n in (1, 2):
            _write_module(str(folder / g / str(n)), f"From: a@b\n\npost {n} in {g}\n")
    co = tmp_path / "authors"
    order = GROUPS[5:] + GROUPS[:5]
    desc = _fake_checkout(co, order)
    _write_pickle(_summary_path(co, "newsgroup_text", "test"),
                  {str(i): f"summary {i}" for i in range(40)})
    run_dir = tmp_path / "run"
    common = ["--quiet", "reproduce", "--datasets", "20newsgroups", "--model", "tiny",
              "--checkpoint", tiny_ckpt, "--data-root", str(root), "--run-dir", str(run_dir),
              "--batch-size", "8", "--ovi-steps", "1"]
    assert main(common) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    src = m["datasets"]["20newsgroups"]["text_source"]
    assert src["comparable_with_paper"] is False
    table = (run_dir / "table.md").read_text()
    assert "not comparable with the paper (our query wording)" in table
    assert "raw text (the paper used summaries)" in table
    assert main([*common, "--authors-assets", str(co)]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    src = m["datasets"]["20newsgroups"]["text_source"]
    assert src["comparable_with_paper"] is True and src["queries"].startswith(
        "the authors' class descriptions (authors' assets: ")
    assert "the authors' class descriptions" in (run_dir / "table.md").read_text()
    clip = load_clip("tiny", tiny_ckpt)
    queries = [fs for fs in _cached(run_dir, "newsgroup_text", "queries")
               if fs.items[0] == f"query/{order[0]}"]
    assert len(queries) == 1 and queries[0].items == [f"query/{g}" for g in order]
    np.testing.assert_allclose(queries[0].features, _direct(clip, [desc[g] for g in order]),
                               atol=1e-5)
