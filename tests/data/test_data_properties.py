"""Property-based tests of the readers (issue #22): generated image-folder, CoOp-split and
BEIR layouts with perturbations (BOM, nested folders, empty classes, dangling and duplicate
ids, zero-score judgements, undecodable files). What the loader reports must equal an
oracle computed here from the layout rules, and no perturbation may pass unreported."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import crossgap_jax.data as cgd
from crossgap_jax.data.loader import ImageBatchLoader

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(path, text, bom):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(("\ufeff" if bom else "") + text)


class _Tmp:
    def __enter__(self):
        self.d = tempfile.mkdtemp(prefix="cg-prop-")
        return self.d

    def __exit__(self, *exc):
        shutil.rmtree(self.d, ignore_errors=True)


# --- image folders ------------------------------------------------------------------------
_image = st.tuples(st.integers(0, 2), st.booleans())  # (sub-folder depth, undecodable)
_klass = st.lists(_image, max_size=4)  # an empty list: an empty class folder


@SETTINGS
@given(classes=st.lists(_klass, min_size=1, max_size=4), skip_empty=st.booleans())
def test_imagefolder_matches_the_layout_oracle(classes, skip_empty):
    with _Tmp() as d:
        want_items, want_labels, nested, bad = [], [], 0, []
        names = [f"c{k}" for k in range(len(classes))]
        for name, images in zip(names, classes):
            os.makedirs(os.path.join(d, name))
            for i, (depth, broken) in enumerate(images):
                rel = "/".join([name] + [f"s{j}" for j in range(depth)] + [f"{i}.png"])
                os.makedirs(os.path.dirname(os.path.join(d, rel)), exist_ok=True)
                if broken:
                    with open(os.path.join(d, rel), "wb") as f:
                        f.write(b"not an image")
                    bad.append(rel)
                else:
                    Image.new("RGB", (4, 4), (i, 0, 0)).save(os.path.join(d, rel))
        kept = [n for n, imgs in zip(names, classes) if imgs]
        empty = [n for n, imgs in zip(names, classes) if not imgs]
        for label, n in enumerate(kept):
            rels = sorted("/".join([n] + [f"s{j}" for j in range(dep)] + [f"{i}.png"])
                          for i, (dep, _) in enumerate(classes[names.index(n)]))
            want_items += rels
            want_labels += [label] * len(rels)
            nested += sum(r.count("/") > 1 for r in rels)
        name = "imagefolder?empty_classes=skip" if skip_empty else "imagefolder"
        if not kept:
            with pytest.raises(cgd.DatasetLayoutError, match="no images"):
                cgd.get_dataset(name, d, "all")
            return
        if empty and not skip_empty:
            with pytest.raises(cgd.DatasetLayoutError, match=empty[0]):
                cgd.get_dataset(name, d, "all")
            return
        s = cgd.get_dataset(name, d, "all")
        assert s.items == want_items and s.labels.tolist() == want_labels
        assert s.classnames == kept
        assert s.extra["from_subfolders"] == nested
        assert s.extra["empty_classes_skipped"] == empty
        loader = ImageBatchLoader(s, 3, image_size=4, num_threads=1)
        list(loader)
        rep = loader.report()
        assert sorted(rep["skipped_names"]) == sorted(bad)
        assert rep["decoded"] + rep["skipped"] == len(want_items)


# --- CoOp split files ---------------------------------------------------------------------
_row = st.tuples(st.sampled_from(["train", "val", "test"]), st.integers(0, 3))


@SETTINGS
@given(rows=st.lists(_row, min_size=1, max_size=12), bom=st.booleans(),
       split=st.sampled_from(["train", "val", "test"]))
def test_coop_split_matches_the_file(rows, bom, split):
    with _Tmp() as d:
        data = {"train": [], "val": [], "test": []}
        for i, (part, label) in enumerate(rows):
            data[part].append([f"k{label}/{i}.jpg", label, f"class {label}"])
        folder = os.path.join(d, "caltech-101")
        os.makedirs(os.path.join(folder, "101_ObjectCategories"))
        _write(os.path.join(folder, "split_zhou_Caltech101.json"), json.dumps(data), bom)
        s = cgd.get_dataset("caltech101", d, split)
        assert s.items == [r[0] for r in data[split]]
        assert s.labels.tolist() == [r[1] for r in data[split]]
        top = max(label for _, label in rows)
        used = {label for _, label in rows}
        assert s.classnames == [f"class {k}" if k in used else f"class_{k}"
                                for k in range(top + 1)]


# --- BEIR collections ---------------------------------------------------------------------
_judgement = st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(-1, 2))


@SETTINGS
@given(judgements=st.lists(_judgement, min_size=1, max_size=14), bom=st.booleans(),
       n_docs=st.integers(1, 5), mode=st.sampled_from(["drop", "count"]))
def test_beir_relevance_and_audit_match_the_oracle(judgements, bom, n_docs, mode):
    """Doc ids >= n_docs dangle (not in the corpus); repeated pairs keep the last score;
    score <= 0 is judged not relevant (BEIR / pytrec_eval)."""
    with _Tmp() as d:
        _write(os.path.join(d, "corpus.jsonl"), "".join(
            json.dumps({"_id": f"d{i}", "text": f"doc {i}"}) + "\n" for i in range(n_docs)), bom)
        _write(os.path.join(d, "queries.jsonl"), "".join(
            json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(4)), bom)
        _write(os.path.join(d, "qrels", "test.tsv"), "query-id\tcorpus-id\tscore\n" + "".join(
            f"q{q}\td{doc}\t{s}\n" for q, doc, s in judgements), bom)
        # the oracle
        last: dict[tuple[int, int], int] = {}
        for q, doc, s in judgements:
            last[(q, doc)] = s
        dup = len(judgements) - len(last)
        queries = sorted({q for q, _ in last})
        rel = {q: sorted(doc for (qq, doc), s in last.items() if qq == q and s > 0
                         and doc < n_docs) for q in queries}
        out = {q: sum(1 for (qq, doc), s in last.items() if qq == q and s > 0 and doc >= n_docs)
               for q in queries}
        task = cgd.get_task("beir", d, qrels_missing=mode, check=False)
        assert task.query.items == [f"q{q}" for q in queries]
        assert [task.positives(i).tolist() for i in range(len(queries))] == [
            rel[q] for q in queries]
        a = task.qrels_audit
        assert a.judged_pairs == len(last)
        assert a.duplicate_pairs == dup
        assert a.zero_score_pairs == sum(s <= 0 for s in last.values())
        assert a.relevant_pairs == sum(s > 0 for s in last.values())
        assert a.outside_pairs == sum(doc >= n_docs for _, doc in last)
        assert a.outside_relevant_pairs == sum(out.values())
        assert a.queries_all_outside == sum(1 for q in queries if out[q] and not rel[q])
        assert len(a.outside_examples) == min(5, a.outside_pairs)
        want = [out[q] if mode == "count" else 0 for q in queries]
        assert task.relevant().unretrievable.tolist() == want
        # every perturbation is reported: nothing dangling, duplicated or zero goes unsaid
        record = a.as_record()
        for key, n in (("outside_pairs", a.outside_pairs), ("duplicate_pairs", dup),
                       ("zero_score_pairs", a.zero_score_pairs)):
            assert record[key] == n
        assert np.array_equal(task.positive_counts(), [len(rel[q]) for q in queries])
