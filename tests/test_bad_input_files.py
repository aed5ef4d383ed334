"""Bad input files and failing outputs (issue 12 items 13, 14, 15, 17, 18; issue 13 item 8).

Each bad-input case is a row of a table: how to build the bad file(s), what to call, the
exact error type and the words its message must contain (file name and line, what is
wrong, the fix). Output failures (read-only folder, full disk) are simulated by making
``os.replace`` / a file write raise the errno a real failure raises (tests run as root,
where ``chmod`` does not stop writes); a real ``chmod 0555`` case runs when not root.
Nothing here touches the network: the hub probe and sockets are monkeypatched.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import struct

import numpy as np
import pytest
from support.tiny_models import tiny_clip

import crossgap_jax.data as cgd
from crossgap_jax import fileio
from crossgap_jax.data import DataFileError, DatasetLayoutError, DegenerateTaskError
from crossgap_jax.data.types import MissingFilesError, TextSplit
from crossgap_jax.models import create_clip, load_clip
from crossgap_jax.models.checkpoint import hub
from crossgap_jax.models.checkpoint.errors import CheckpointError, CheckpointNotFoundError
from crossgap_jax.models.checkpoint.fingerprint import params_fingerprint
from crossgap_jax.models.checkpoint.hub import OFFLINE_VARS
from crossgap_jax.models.checkpoint.native import save_native

PNG = bytes.fromhex(  # a valid 1x1 RGB PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
    "9c63f8cfc0000003010100c9fe92ef0000000049454e44ae426082")


# ---------------------------------------------------------------------------------------
# Builders of bad files
# ---------------------------------------------------------------------------------------
def _write(path, text: str | bytes) -> str:
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    return str(path)


def _native(tmp, name="tiny.safetensors", seed=3) -> str:
    clip = tiny_clip(seed)
    return save_native(str(tmp / name), clip.config, clip.params)


def _truncated_data(tmp):
    path = _native(tmp)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1000)
    return path


def _truncated_header(tmp):
    path = _native(tmp)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    with open(path, "r+b") as f:
        f.truncate(8 + n // 2)
    return path


def _beir(tmp, corpus=None, queries=None, qrels=None, skip=()):
    d = tmp / "beir"
    files = {
        "corpus.jsonl": corpus if corpus is not None else (
            '{"_id": "d1", "title": "", "text": "alpha"}\n'
            '{"_id": "d2", "title": "", "text": "beta"}\n'
            '{"_id": "d3", "title": "", "text": "gamma"}\n'),
        "queries.jsonl": queries if queries is not None else (
            '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n'
            '{"_id": "q3", "text": "third"}\n'),
        "qrels/test.tsv": qrels if qrels is not None else (
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"),
    }
    for name, text in files.items():
        if name not in skip:
            _write(d / name, text)
    os.makedirs(d / "qrels", exist_ok=True)
    return str(d)


def _images(base, rels):
    for r in rels:
        _write(os.path.join(str(base), r), PNG)
    return str(base)


# ---------------------------------------------------------------------------------------
# The table: (id, build(tmp) -> callable, error type, words in the message)
# ---------------------------------------------------------------------------------------
def _load_ckpt(path):
    return lambda: load_clip(path)


def _jsonl(text):
    def build(tmp):
        path = _write(tmp / "texts.jsonl", text)
        return lambda: cgd.get_dataset("jsonl", path)
    return build


def _beir_call(split="queries", task=False, **kw):
    def build(tmp):
        d = _beir(tmp, **kw)
        if task:
            return lambda: cgd.get_task("beir", d)
        return lambda: cgd.get_dataset("beir", d, split)
    return build


def _single_folder_imagefolder(tmp):
    root = _images(tmp / "val", [f"images/{i:03d}.png" for i in range(6)])
    return lambda: cgd.get_task("imagefolder", root)


def _annotation(text, name="labels.txt"):
    def build(tmp):
        root = _images(tmp / "val", [f"images/{i:03d}.png" for i in range(4)])
        ann = _write(tmp / name, text)
        return lambda: cgd.get_dataset(f"imagefolder?labels={ann}", root, "all")
    return build


def _queries_without_positives(tmp):
    root = tmp / "folder"
    # test/ and train/ share class "a" only; b's queries have nothing to find
    _images(root / "test", ["a/0.png"] + [f"b/{i}.png" for i in range(3)])
    _images(root / "train", [f"c/{i}.png" for i in range(3)] + ["a/1.png"])
    return lambda: cgd.get_task("imagefolder", str(root))


CASES = [
    # item 13: truncated checkpoints, broken / empty JSONL
    ("safetensors cut in its data", lambda t: _load_ckpt(_truncated_data(t)), CheckpointError,
     ["tiny.safetensors", "truncated", "1,000 missing", "fetch or copy the file again"]),
    ("safetensors cut in its header", lambda t: _load_ckpt(_truncated_header(t)),
     CheckpointError, ["tiny.safetensors", "truncated", "header declares"]),
    ("safetensors with a damaged header",
     lambda t: _load_ckpt(_write(t / "bad.safetensors", struct.pack("<Q", 6) + b"{oops}xx")),
     CheckpointError, ["bad.safetensors", "damaged safetensors header", "not valid JSON"]),
    ("JSONL broken line", _jsonl('{"text": "a", "label": "x"}\n{"text": "b", "label": \n'),
     DataFileError, ["texts.jsonl:2", "not valid JSON", "each line must be one JSON object"]),
    ("JSONL empty file", _jsonl(""), DataFileError,
     ["texts.jsonl", "no records", "'text'"]),
    ("JSONL blank lines only", _jsonl("\n  \n"), DataFileError, ["texts.jsonl", "no records"]),
    ("JSONL line without text", _jsonl('{"text": "a"}\n\n{"txt": "b"}\n'), DataFileError,
     ["texts.jsonl:3", "no 'text' field", "['txt']"]),
    ("JSONL line that is not an object", _jsonl('{"text": "a"}\n[1, 2]\n'), DataFileError,
     ["texts.jsonl:2", "expected a JSON object", "list"]),
    ("JSONL without labels, as a task", lambda t: (lambda: cgd.get_task(
        "jsonl", _write(t / "texts.jsonl", '{"text": "a"}\n{"text": "b"}\n'))), ValueError,
     ["texts.jsonl has no labels", "relevance='label' needs them", "'label' field"]),
    ("JSONL labels on some lines only",
     _jsonl('{"text": "a", "label": 0}\n{"text": "b"}\n'), DataFileError,
     ["texts.jsonl:2", "no 'label' field", "1 of the 2 records"]),
    ("BEIR corpus broken line", _beir_call("corpus", corpus='{"_id": "d1", "text": "x"}\n{"_id'),
     DataFileError, ["corpus.jsonl:2", "not valid JSON"]),
    ("BEIR query without _id", _beir_call(queries='{"text": "x"}\n'), DataFileError,
     ["queries.jsonl:1", "no '_id' field"]),
    # item 18: qrels by the format's rules, missing files named, id mismatches shown
    ("qrels separated by spaces", _beir_call(qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n"),
     DataFileError, ["test.tsv:2", "3 tab-separated fields", "separated by spaces, not tabs"]),
    ("qrels score not an integer", _beir_call(qrels="q1\td1\thigh\n"), DataFileError,
     ["test.tsv:1", "score 'high' is not an integer"]),
    ("qrels with an empty id", _beir_call(qrels="q1\t\t1\n"), DataFileError,
     ["test.tsv:1", "empty query-id or corpus-id"]),
    ("qrels of another collection", _beir_call(qrels="x1\td1\t1\nx2\td2\t1\n"), DataFileError,
     ["test.tsv", "none of its 2 query ids", "'x1'", "'q1'"]),
    ("BEIR without corpus.jsonl", _beir_call("corpus", skip=("corpus.jsonl",)),
     DatasetLayoutError, ["BEIR folder", "missing corpus.jsonl"]),
    ("qrels ids not in the corpus", _beir_call(task=True, qrels="q1\tD1\t1\nq2\tD2\t1\n"),
     DegenerateTaskError, ["2 of 2 queries have no relevant", "'D1'", "'d1'",
                           "do the qrels belong to this corpus"]),
    # item 17: one class, annotation files, queries without positives
    ("image folder read as one class", _single_folder_imagefolder, DegenerateTaskError,
     ["all 6 gallery items have the same label", "one class", "mAP would be 100",
      "imagefolder?labels=FILE"]),
    ("annotation naming a missing image", _annotation("000.png 1\nnope.png 2\n"),
     MissingFilesError, ["1 of 2 images listed in", "labels.txt", "'nope.png'"]),
    ("annotation line without a label", _annotation("000.png 1\n001.png\n"), DataFileError,
     ["labels.txt:2", "expected '<path> <label>'"]),
    ("annotation CSV without a label column", _annotation("filename,width\n000.png,3\n",
                                                          "labels.csv"),
     DataFileError, ["labels.csv:1", "label column", "['filename', 'width']"]),
    ("annotation file empty", _annotation(""), DataFileError, ["labels.txt", "empty"]),
    ("most queries without a relevant item", _queries_without_positives, DegenerateTaskError,
     ["3 of 4 queries have no relevant gallery item", "do the splits share classes"]),
]


@pytest.mark.parametrize("build,etype,words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_file(tmp_path, build, etype, words):
    call = build(tmp_path)
    with pytest.raises(etype) as e:
        call()
    msg = str(e.value)
    for w in words:
        assert w in msg, (w, msg)
    assert "Traceback" not in msg


# ---------------------------------------------------------------------------------------
# Item 18 / 17: the right values from good-but-awkward files
# ---------------------------------------------------------------------------------------
def test_qrels_mixed_tabs_and_trailing_spaces_keep_every_judgement(tmp_path):
    qrels = ("query-id\tcorpus-id\tscore \n"     # a header with a trailing space
             "q1\td1 \t1\n"                     # a space before the tab
             "q1\td3\t2  \n"                    # trailing spaces
             "\n"
             "q2\t d2\t1\r\n")                  # a space after the tab, CRLF
    d = _beir(tmp_path, qrels=qrels)
    q = cgd.get_dataset("beir", d, "queries")
    assert q.qrels == {"q1": {"d1": 1, "d3": 2}, "q2": {"d2": 1}}
    assert q.items == ["q1", "q2"]  # q3 has no judgement: dropped
    assert q.extra == {"judged_queries": 2, "judged_pairs": 3, "unjudged_queries_dropped": 1,
                       "qrels_duplicate_pairs": 0}
    task = cgd.get_task("beir", d)
    assert task.positive_counts().tolist() == [2, 1]


def test_annotation_files_give_labels(tmp_path):
    root = _images(tmp_path / "val", ["images/a.png", "images/b.png", "images/c.png",
                                      "images/d.png"])
    # whitespace form, bare file names, class names with a space
    ws = _write(tmp_path / "ws.txt", "d.png tabby cat\na.png dog\nc.png dog\nb.png tabby cat\n")
    s = cgd.get_dataset(f"imagefolder?labels={ws}", root, "all")
    assert s.items == ["images/a.png", "images/b.png", "images/c.png", "images/d.png"]
    assert s.classnames == ["dog", "tabby cat"] and s.labels.tolist() == [0, 1, 0, 1]
    # CSV with filename,label (integer labels kept as given), paths relative to the folder
    csv_ = _write(tmp_path / "l.csv", "filename,label\nimages/a.png,2\nimages/b.png,0\n"
                                      "images/c.png,2\nimages/d.png,0\n")
    s = cgd.get_dataset("imagefolder", root, "all", labels=csv_)
    assert s.labels.tolist() == [2, 0, 2, 0] and s.classnames == ["0", "1", "2"]
    # CSV path,label without extensions; the task now has two classes and is accepted
    csv2 = _write(tmp_path / "p.csv", "path,label\na,x\nb,y\nc,x\nd,y\n")
    task = cgd.get_task(f"imagefolder?labels={csv2}", root)
    assert task.relevance == "label" and task.exclude_self
    assert task.positive_counts().tolist() == [1, 1, 1, 1]


def test_splits_with_different_class_folders_share_one_label_space(tmp_path):
    root = tmp_path / "folder"
    _images(root / "test", ["b/0.png", "c/0.png"])
    _images(root / "train", ["a/0.png", "b/1.png", "c/1.png", "c/2.png"])
    task = cgd.get_task("imagefolder", str(root))
    # by folder index, test's b (0) would match train's a (0): by name it matches b
    assert task.query.classnames == task.gallery.classnames == ["a", "b", "c"]
    assert task.query.labels.tolist() == [1, 2] and task.gallery.labels.tolist() == [0, 1, 2, 2]
    assert task.positive_counts().tolist() == [1, 2]


def test_list_detects_imagenet_only_by_its_defining_files(tmp_path):
    # Any folder of folders with a val/ is not ImageNet ...
    _images(tmp_path / "plain" / "val", ["images/0.png"])
    found = {e.name: e.found for e in cgd.list_datasets(str(tmp_path / "plain"))}
    assert found["imagenet"] is None
    # ... WordNet-id class folders are.
    _images(tmp_path / "inet" / "imagenet" / "val", ["n01440764/0.png", "n01443537/1.png"])
    found = {e.name: e.found for e in cgd.list_datasets(str(tmp_path / "inet"))}
    assert found["imagenet"] == str(tmp_path / "inet" / "imagenet")


# ---------------------------------------------------------------------------------------
# Item 14: one atomic writer; read-only folder, full disk; permissions
# ---------------------------------------------------------------------------------------
def _fail(code):
    def boom(*a, **k):
        raise OSError(code, os.strerror(code))
    return boom


class _FullDiskFile:
    """A file object whose writes fail with ENOSPC after ``budget`` bytes (a full disk)."""

    def __init__(self, f, budget=10):
        self.f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            self.f.write(data[: self.budget])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.mark.parametrize("patch,code,words", [
    ("replace", errno.EROFS, ["the file system is read-only (EROFS)",
                              "choose a writable output folder"]),
    ("mkstemp", errno.EACCES, ["permission denied (EACCES)"]),
    ("write", errno.ENOSPC, ["no space left on the device (ENOSPC)", "free some space"]),
    ("fsync", errno.EDQUOT, ["disk quota exceeded (EDQUOT)"]),
], ids=["read-only", "not writable", "disk full", "quota"])
def test_failed_write_names_path_and_cause_and_keeps_old_file(tmp_path, monkeypatch, patch,
                                                               code, words):
    path = tmp_path / "out" / "metrics.json"
    fileio.atomic_write_json(str(path), {"old": 1})
    if patch == "write":
        real_open = open
        monkeypatch.setattr(fileio, "open", lambda p, m, **k: _FullDiskFile(real_open(p, m, **k)),
                            raising=False)
    elif patch == "mkstemp":
        monkeypatch.setattr(fileio.tempfile, "mkstemp", _fail(code))
    else:
        monkeypatch.setattr(fileio.os, patch, _fail(code))
    with pytest.raises(fileio.OutputWriteError) as e:
        fileio.atomic_write_json(str(path), {"new": 2})
    monkeypatch.undo()
    msg = str(e.value)
    assert msg.startswith(f"cannot write {path}: ") and e.value.errno == code
    for w in words:
        assert w in msg
    assert "the existing file is unchanged" in msg
    assert isinstance(e.value, OSError)
    assert os.listdir(path.parent) == ["metrics.json"]  # no temporary / partial file
    assert json.loads(path.read_text()) == {"old": 1}   # nothing already written lost


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores chmod 0555 (simulated above)")
def test_real_read_only_folder(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        with pytest.raises(fileio.OutputWriteError, match="permission denied") as e:
            fileio.atomic_write_bytes(str(d / "x.bin"), b"1")
        assert str(d / "x.bin") in str(e.value) and os.listdir(d) == []
    finally:
        d.chmod(0o755)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        assert fileio.file_mode() == mode
        fileio.atomic_write_bytes(str(tmp_path / "f.bin"), b"x")
        with fileio.atomic_path(str(tmp_path / "g.bin")) as tmp:
            np.save(open(tmp, "wb"), np.zeros(2))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.bin").st_mode & 0o777 == mode
    assert os.stat(tmp_path / "g.bin").st_mode & 0o777 == mode


def test_cli_read_only_run_dir_is_one_line(tmp_path, monkeypatch, capsys):
    from crossgap_jax.cli import main

    ckpt = _native(tmp_path)
    data = _write(tmp_path / "t.jsonl", '{"text": "a"}\n')
    monkeypatch.setattr(fileio.os, "replace", _fail(errno.EROFS))
    rc = main(["--quiet", "encode", "--dataset", "jsonl", "--model", "tiny", "--checkpoint",
               ckpt, "--data-root", data, "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    # The first file written is the feature cache (no command writes a shared config).
    assert str(tmp_path / "run" / "features") in err and "read-only (EROFS)" in err
    assert [p for p in (tmp_path / "run").rglob("*") if p.is_file()] == []


def test_cli_run_dir_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys):
    from crossgap_jax.cli import main

    ckpt = _native(tmp_path)
    data = _write(tmp_path / "t.jsonl", '{"text": "a"}\n')
    run = str(tmp_path / "ro" / "run")
    real = os.makedirs

    def makedirs(path, *a, **k):
        if os.fspath(path).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "makedirs", makedirs)
    rc = main(["--quiet", "encode", "--dataset", "jsonl", "--model", "tiny", "--checkpoint",
               ckpt, "--data-root", data, "--run-dir", run])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    # Making a run writes nothing: the first folder written (features/) is the one named.
    assert f"cannot write {run}/features/jsonl: the file system is read-only (EROFS)" in err


def test_no_empty_skip_list_when_nothing_was_skipped(tmp_path):
    from crossgap_jax.data import ImageBatchLoader, ImageSplit

    root = _images(tmp_path / "imgs", ["a.png", "b.png"])
    split = ImageSplit(name="x", split="all", items=["a.png", "b.png"],
                       paths=[os.path.join(root, "a.png"), os.path.join(root, "b.png")],
                       labels=np.array([0, 1]))
    log = tmp_path / "skipped.txt"
    list(ImageBatchLoader(split, 2, image_size=8, error_log=str(log)))
    assert not log.exists()


# ---------------------------------------------------------------------------------------
# Item 15: offline detected up front, not after a minute of retries
# ---------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Sockets that fail at once (and count), an empty private HF cache, no probe memory."""
    import huggingface_hub
    import huggingface_hub.constants as hf_constants

    calls = {"probe": 0, "connect": 0, "download": [], "getaddrinfo": 0}

    def probe(*a, **k):
        calls["probe"] += 1
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    def connect(self, *a, **k):
        calls["connect"] += 1
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    def gai(*a, **k):
        calls["getaddrinfo"] += 1
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    real_download = huggingface_hub.hf_hub_download

    def download(*a, **k):
        calls["download"].append(k.get("local_files_only"))
        return real_download(*a, **k)

    monkeypatch.setattr(socket, "create_connection", probe)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", gai)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for v in OFFLINE_VARS + ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(hub, "_REACHABLE", {})
    return calls


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                 "CROSSGAP_JAX_OFFLINE"])
def test_offline_variable_is_honoured_up_front(no_network, monkeypatch, var):
    monkeypatch.setenv(var, "1")
    with pytest.raises(CheckpointNotFoundError) as e:
        load_clip("someorg/some-model")
    msg = str(e.value)
    assert f"offline mode is on ({var}=1)" in msg and "someorg/some-model" in msg
    assert "config.json" in msg and "checkpoint=DIR" in msg
    assert no_network["probe"] == no_network["connect"] == no_network["getaddrinfo"] == 0
    assert no_network["download"] and all(no_network["download"])  # cache lookups only


def test_blocked_network_is_detected_by_one_probe(no_network):
    for _ in range(2):
        with pytest.raises(CheckpointNotFoundError, match="cannot be reached") as e:
            load_clip("someorg/some-model")
        assert "someorg/some-model" in str(e.value) and "hf download" in str(e.value)
    assert no_network["probe"] == 1              # once per process, not per file or retry
    assert no_network["connect"] == no_network["getaddrinfo"] == 0  # the client never tried
    assert all(no_network["download"])


# ---------------------------------------------------------------------------------------
# Issue 13 item 8: a content-keyed feature cache
# ---------------------------------------------------------------------------------------
def test_params_hash_is_the_documented_formula():
    params = {"b": {"w": np.array([[1.0, 2.0]], np.float32)}, "a": np.array([0.5], np.float64)}
    h = hashlib.sha256()
    h.update(b"a")
    h.update(np.array([0.5], "<f4").tobytes())
    h.update(b"b/w")
    h.update(np.array([1.0, 2.0], "<f4").tobytes())
    assert params_fingerprint(params) == h.hexdigest()


@pytest.fixture
def counted_encoder(monkeypatch):
    from crossgap_jax.pipeline import features

    calls = []
    real = features.encode_split

    def encode(clip, split, **kw):
        calls.append(list(split.items))
        return real(clip, split, **kw)

    monkeypatch.setattr(features, "encode_split", encode)
    return calls


def _texts(n=6):
    return TextSplit(name="t", split="all", items=[f"i{k}" for k in range(n)],
                     texts=[f"text number {k}" for k in range(n)])


@pytest.mark.slow
def test_same_weights_by_another_path_or_symlink_encode_nothing(tmp_path, monkeypatch,
                                                                counted_encoder):
    from crossgap_jax.pipeline.features import cached_split_features

    (tmp_path / "a" / "b").mkdir(parents=True)
    ckpt = _native(tmp_path / "a")
    os.symlink(ckpt, tmp_path / "link.safetensors")
    monkeypatch.chdir(tmp_path / "a" / "b")
    cache = str(tmp_path / "cache")
    first = cached_split_features(load_clip("../tiny.safetensors"), _texts(), cache,
                                  progress=False)
    assert len(counted_encoder) == 1
    files = sorted(os.listdir(os.path.join(cache, "features", "t")))
    monkeypatch.chdir(tmp_path)
    for source in ("a/tiny.safetensors", "./a/b/../tiny.safetensors", "link.safetensors",
                   str(tmp_path / "link.safetensors")):
        clip = load_clip(source)
        again = cached_split_features(clip, _texts(), cache, progress=False)
        assert np.array_equal(again.features, first.features) and again.items == first.items
        assert clip.info["params_sha256"] == first.meta["model"]["params_sha256"]
    assert len(counted_encoder) == 1                     # nothing encoded again
    assert sorted(os.listdir(os.path.join(cache, "features", "t"))) == files
    # Other weights are another entry (and are encoded).
    cached_split_features(load_clip(_native(tmp_path, "other.safetensors", seed=4)), _texts(),
                          cache, progress=False)
    assert len(counted_encoder) == 2


def test_bounded_run_reuses_the_full_split(tmp_path, counted_encoder):
    from crossgap_jax.pipeline.features import cached_split_features

    clip = load_clip(_native(tmp_path))
    cache = str(tmp_path / "cache")
    full = cached_split_features(clip, _texts(), cache, progress=False)
    sub = _texts().subset([4, 1, 3])
    part = cached_split_features(clip, sub, cache, progress=False)
    assert len(counted_encoder) == 1                     # the subset encoded nothing
    assert part.items == ["i4", "i1", "i3"]
    assert np.array_equal(part.features, full.features[[4, 1, 3]])
    assert part.meta["num_items"] == 3
    # Items outside the cached split are encoded (only then) ...
    bigger = cached_split_features(clip, _texts(8), cache, progress=False)
    assert len(counted_encoder) == 2 and len(bigger) == 8
    # ... and so are the same ids with other texts (e.g. summaries instead of raw texts).
    other = _texts().with_texts({"i1": "a summary"}).subset([1, 3])
    got = cached_split_features(clip, other, cache, progress=False)
    assert counted_encoder[-1] == ["i1"] and len(counted_encoder) == 3  # i3: same text
    np.testing.assert_allclose(got.features[1], full.features[3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got.features[0], full.features[1], rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_weights_hash_follows_the_params_object():
    clip = create_clip("tiny", seed=0)
    h0 = clip.weights_sha256
    assert clip.info["params_sha256"] == h0 == params_fingerprint(clip.params)
    assert clip.with_dtype("bfloat16").weights_sha256 == h0
    clip.params = create_clip("tiny", seed=1).params
    assert clip.weights_sha256 != h0


def test_write_to_a_folder_or_under_a_file_is_an_output_error(tmp_path):
    blocker = _write(tmp_path / "model.safetensors", b"keep")
    with pytest.raises(fileio.OutputWriteError, match="a file, not a folder"):
        fileio.atomic_write_json(os.path.join(blocker, "out.json"), {"a": 1})
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(fileio.OutputWriteError, match="it is a folder"):
        fileio.atomic_write_json(str(folder), {"a": 1})
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert open(blocker, "rb").read() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "results"]


@pytest.mark.parametrize("where", ["under_file", "folder"])
def test_cli_unusable_output_path_is_refused_before_any_work(tmp_path, capsys, where):
    from crossgap_jax.cli import main

    ckpt = _native(tmp_path)
    data = _write(tmp_path / "t.jsonl", '{"text": "a"}\n{"text": "b"}\n')
    out = os.path.join(ckpt, "out.json") if where == "under_file" else str(tmp_path)
    rc = main(["--quiet", "retrieve", "--dataset", "jsonl", "--checkpoint", ckpt,
               "--data-root", data, "--run-dir", str(tmp_path / "run"), "--output", out])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"--output {out}:" in err
    assert ("is a file, not a folder" if where == "under_file" else "is a folder") in err
    assert not (tmp_path / "run").exists()
