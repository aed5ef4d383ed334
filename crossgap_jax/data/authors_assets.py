"""The paper authors' text assets: LLM summaries of gallery texts, 20 Newsgroups queries.

The paper did not encode the raw gallery texts of IMDB, 20 Newsgroups and the seven
NanoBEIR sets: it replaced *every* gallery text by an LLM summary (Llama-3.2-1B-Instruct)
shipped in the authors' repository, and its 20 Newsgroups queries are detailed class
descriptions held in the authors' 20NG dataset module. We do not redistribute either;
a user who has a checkout of the authors' repository points the package at it
(``--authors-assets DIR``) and these pure functions read what is needed **without
executing any of it**:

* summaries: ``<summaries dir>/<name>/<split>/meta-llama_Llama-3.2-1B-Instruct/
  summarized_text.pkl``, a pickled ``dict[str, str]`` (key: the item's index as a decimal
  string for IMDB and 20NG, the corpus ``_id`` for NanoBEIR). They are read with a
  restricted unpickler that resolves no global at all (so no ``__reduce__`` payload can
  run and no class can be built) and admits only ``dict``, ``list``, ``str`` and ``int``.
* 20NG queries: the dict literal assigned to ``class_to_template`` in a ``.py`` file of
  the checkout, found by parsing the files with :mod:`ast` and read with
  :func:`ast.literal_eval` (nothing is imported).

``DIR`` may be the checkout, its ``data/summarized_texts`` folder, or a ``data`` folder
holding ``summarized_texts``. Facts about the format: ``PAPER.md`` ("Authors' assets").

(About 480 lines: both readers share the checkout discovery and the "read, never run"
safety rules, which are easier to audit in one file.)
"""

from __future__ import annotations

import ast
import dataclasses
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from crossgap_jax.data._fs import open_text
from crossgap_jax.data.sources.newsgroups import NEWSGROUP_DESCRIPTIONS
from crossgap_jax.data.task import RetrievalTask
from crossgap_jax.data.types import TextSplit

__all__ = [
    "SUMMARY_SPECS",
    "AuthorsAssetsError",
    "SummarySpec",
    "apply_authors_assets",
    "apply_authors_assets_to_split",
    "check_authors_assets",
    "find_checkout_root",
    "find_summaries_dir",
    "newsgroup_queries",
    "read_class_descriptions",
    "read_summaries",
    "summary_file",
    "summary_replacements",
    "text_source",
]

SUMMARY_MODEL_DIR = "meta-llama_Llama-3.2-1B-Instruct"
SUMMARY_FILE_NAME = "summarized_text.pkl"
DESCRIPTIONS_NAME = "class_to_template"
RAW_SUMMARIZED = "raw text (the paper used summaries)"
OUR_QUERIES = "our short class descriptions: not comparable with the paper (our query wording)"
_SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "summarized_texts"}


class AuthorsAssetsError(ValueError):
    """An authors' asset is missing, malformed, unsafe, or does not cover the data."""


@dataclasses.dataclass(frozen=True)
class SummarySpec:
    """Where the authors' summaries of one dataset's gallery live and how they are keyed.

    Attributes:
        dataset: registry name of the dataset.
        folder: ``<name>`` folder under ``summarized_texts``.
        folder_split: ``<split>`` folder under it.
        gallery_split: our reader's split that the summaries replace.
        key: ``"index"`` (item position as a decimal string) or ``"id"`` (the corpus id).
    """

    dataset: str
    folder: str
    folder_split: str
    gallery_split: str
    key: Literal["index", "id"]

    @property
    def relpath(self) -> str:
        return "/".join((self.folder, self.folder_split, SUMMARY_MODEL_DIR, SUMMARY_FILE_NAME))


SUMMARY_SPECS: dict[str, SummarySpec] = {
    s.dataset: s
    for s in [
        SummarySpec("imdb_text", "imdb_text", "all", "all", "index"),
        SummarySpec("newsgroup_text", "newsgroup_text", "test", "test", "index"),
        *(SummarySpec(n.lower(), n, "gallery", "corpus", "id") for n in (
            "NanoClimateFEVER", "NanoDBPedia", "NanoFEVER", "NanoNFCorpus", "NanoNQ",
            "NanoSCIDOCS", "NanoSciFact")),
    ]
}


# --------------------------------------------------------------------------------------
# Locating the assets


def _has_summaries(d: str) -> bool:
    return any(os.path.isdir(os.path.join(d, s.folder)) for s in SUMMARY_SPECS.values())


def find_summaries_dir(assets: str | os.PathLike) -> str:
    """The ``summarized_texts`` folder of ``assets`` (a checkout, ``data/`` or the folder).

    Raises:
        AuthorsAssetsError: ``assets`` is not a folder, or none of the accepted places holds
            a ``summarized_texts`` folder with a dataset sub-folder (the message lists them).
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(assets)))
    if not os.path.isdir(root):
        raise AuthorsAssetsError(f"--authors-assets: {root} is not a folder (give a checkout "
                                 "of the authors' repository or its data/summarized_texts)")
    tried = [root, os.path.join(root, "summarized_texts"),
             os.path.join(root, "data", "summarized_texts")]
    for d in tried:
        if os.path.isdir(d) and (os.path.basename(d) == "summarized_texts" or _has_summaries(d)):
            return d
    raise AuthorsAssetsError(
        f"--authors-assets {root}: no summarized_texts folder; looked for\n"
        + "\n".join(f"  {d}" for d in tried)
        + "\n(expected <checkout>/data/summarized_texts/<name>/<split>/"
        f"{SUMMARY_MODEL_DIR}/{SUMMARY_FILE_NAME})"
    )


def find_checkout_root(assets: str | os.PathLike) -> str:
    """The checkout of the authors' repository that ``assets`` points into.

    ``<checkout>/data/summarized_texts`` and ``<checkout>/data`` give ``<checkout>``;
    anything else is taken as the checkout itself.
    """
    d = os.path.abspath(os.path.expanduser(os.fspath(assets)))
    if os.path.basename(d) == "summarized_texts":
        d = os.path.dirname(d)
    if os.path.basename(d) == "data" and os.path.isdir(os.path.join(d, "summarized_texts")):
        d = os.path.dirname(d)
    return d


def summary_file(assets: str | os.PathLike, dataset: str) -> str:
    """Path of the authors' summary pickle of ``dataset`` (a :data:`SUMMARY_SPECS` name).

    Raises:
        KeyError: the paper did not summarise this dataset.
        AuthorsAssetsError: the file is not there (the message names the path).
    """
    spec = SUMMARY_SPECS[dataset]
    path = os.path.join(find_summaries_dir(assets), *spec.relpath.split("/"))
    if not os.path.isfile(path):
        raise AuthorsAssetsError(f"{dataset}: the authors' summary file is missing: {path}")
    return path


# --------------------------------------------------------------------------------------
# Reading the summaries without executing anything

_ALLOWED = (dict, list, str, int)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Resolves no global (class, function): a pickle can then only build builtin values."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refers to {module}.{name}; only dict, list, str and int are admitted")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("uses persistent ids; only dict, list, str and int are "
                                     "admitted")


def _check_plain(obj: Any, path: str) -> None:
    stack = [obj]
    while stack:
        x = stack.pop()
        if type(x) not in _ALLOWED:  # exact types: bool, tuple, bytes, float... refused
            raise AuthorsAssetsError(f"{path}: holds a {type(x).__name__}; only dict, list, "
                                     "str and int are admitted (not the authors' format?)")
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def read_summaries(path: str | os.PathLike) -> dict[str, str]:
    """Read one of the authors' ``summarized_text.pkl`` files safely.

    The unpickler resolves no global name, so nothing in the file is imported or called
    (a ``__reduce__`` payload, a class instance or a numpy array is refused before it is
    built), and the result must consist of ``dict``, ``list``, ``str`` and ``int`` only.

    Args:
        path: the pickle.

    Returns:
        ``{key: text}``: keys as strings (int keys become their decimal string).

    Raises:
        AuthorsAssetsError: the file is unreadable, holds any other type, its top level is
            not a dict, or a value is not a string. The message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = _NoGlobalsUnpickler(f).load()
    except pickle.UnpicklingError as e:
        raise AuthorsAssetsError(f"{path}: refused: the pickle {e}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, OverflowError) as e:
        raise AuthorsAssetsError(f"{path}: not a readable pickle ({type(e).__name__}: {e})"
                                 ) from None
    _check_plain(data, path)
    if not isinstance(data, dict):
        raise AuthorsAssetsError(f"{path}: the top level is a {type(data).__name__}, "
                                 "expected a dict {item: summary text}")
    out: dict[str, str] = {}
    for k, v in data.items():
        if not isinstance(v, str):
            raise AuthorsAssetsError(f"{path}: the value of key {k!r} is a {type(v).__name__}, "
                                     "expected a str (the summary text)")
        out[str(k)] = v
    if len(out) != len(data):
        raise AuthorsAssetsError(f"{path}: keys collide once written as strings "
                                 "(e.g. 1 and '1')")
    return out


def _item_keys(split: TextSplit, spec: SummarySpec) -> list[str]:
    """The authors' key of every item of ``split`` (see :data:`SUMMARY_SPECS`)."""
    if spec.key == "id":
        return list(split.items)
    if spec.dataset == "imdb_text":
        if not all(it.startswith("row") and it[3:].isdigit() for it in split.items):
            raise AuthorsAssetsError(
                "imdb_text: the authors' summaries are keyed by the row index of "
                "IMDB_Dataset.csv, but the reviews were read from the aclImdb folders, whose "
                "order differs: put 'IMDB Dataset.csv' (imdb/IMDB Dataset.csv) under the "
                "data root instead")
        return [str(int(it[3:])) for it in split.items]
    return [str(i) for i in range(len(split))]  # 20NG: index in sklearn's order


def summary_replacements(split: TextSplit, summaries: Mapping[str, str], spec: SummarySpec,
                         path: str) -> dict[str, str]:
    """``{item: summary}`` for every item of a full gallery split, checked for coverage.

    Args:
        split: the dataset's full gallery split as our reader returns it (for 20NG the
            sklearn order, for IMDB the CSV rows).
        summaries: the authors' ``{key: text}``.
        spec: the dataset's :class:`SummarySpec`.
        path: the pickle (for messages).

    Raises:
        AuthorsAssetsError: some items have no summary (count and first ids), or the file
            has keys that are no item (a different ordering or version of the data).
    """
    keys = _item_keys(split, spec)
    missing = [(it, k) for it, k in zip(split.items, keys) if k not in summaries]
    if missing:
        shown = ", ".join(f"{k!r}" + (f" ({it})" if it != k else "") for it, k in missing[:5])
        raise AuthorsAssetsError(
            f"{spec.dataset}: {len(missing)} of {len(split)} gallery items have no summary in "
            f"{path}; first missing keys: {shown}")
    extra = set(summaries) - set(keys)
    if extra:
        shown = ", ".join(repr(k) for k in sorted(extra)[:5])
        raise AuthorsAssetsError(
            f"{spec.dataset}: {path} has {len(extra)} keys that are no gallery item of "
            f"{split.name}/{split.split} ({len(split)} items), e.g. {shown}: the data or its "
            "order differs from the authors'")
    return {it: summaries[k] for it, k in zip(split.items, keys)}


# --------------------------------------------------------------------------------------
# 20 Newsgroups class descriptions (a dict literal in a .py file of the checkout)


def _py_files(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS)
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return out


def _literal_assignments(path: str, name: str) -> list[tuple[int, Any]]:
    """``(line, value)`` of every ``name = <literal>`` in a Python file (parsed, not run)."""
    try:
        with open_text(path) as f:
            source = f.read()
    except (OSError, UnicodeDecodeError):
        return []
    if name not in source:
        return []
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                out.append((node.lineno, ast.literal_eval(value)))
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                out.append((node.lineno, None))  # not a literal
    return out


def read_class_descriptions(assets: str | os.PathLike,
                            classnames: Sequence[str]) -> tuple[dict[str, str], str]:
    """The authors' 20 Newsgroups query descriptions, in their module's order.

    Searches the checkout's ``.py`` files for an assignment to ``class_to_template`` whose
    value is a dict literal keyed by newsgroup names; the file is parsed with :mod:`ast`
    and the value read with :func:`ast.literal_eval` (never imported).

    Args:
        assets: the ``--authors-assets`` folder (see :func:`find_checkout_root`).
        classnames: the 20 newsgroup names (scikit-learn's ``target_names``).

    Returns:
        ``({newsgroup: description} in the module's order, "<file>:<line>")``.

    Raises:
        AuthorsAssetsError: no such assignment, or the found dict is not a literal
            ``{str: str}``, misses some of ``classnames`` or has other keys, or several
            different ones exist.
    """
    root = find_checkout_root(assets)
    wanted = set(classnames)
    files = _py_files(root)
    found: list[tuple[str, dict[str, str]]] = []
    problems: list[str] = []
    for path in files:
        for line, value in _literal_assignments(path, DESCRIPTIONS_NAME):
            where = f"{path}:{line}"
            if not isinstance(value, dict):
                problems.append(f"{where}: not a dict literal")
                continue
            if not wanted & set(value):
                continue  # another dataset's class_to_template
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                problems.append(f"{where}: keys and values must be strings")
                continue
            missing = [c for c in classnames if c not in value]
            other = [k for k in value if k not in wanted]
            if missing or other:
                problems.append(f"{where}: {len(missing)} newsgroups missing {missing[:5]}, "
                                f"{len(other)} unknown keys {other[:5]}")
                continue
            found.append((where, value))
    if not found:
        detail = ("\n" + "\n".join(f"  {p}" for p in problems)) if problems else ""
        raise AuthorsAssetsError(
            f"newsgroup_text: no '{DESCRIPTIONS_NAME} = {{newsgroup: description}}' covering the "
            f"20 newsgroups in the {len(files)} .py files under {root} (the authors' 20NG "
            f"dataset module; point --authors-assets at the checkout){detail}")
    if any(list(v.items()) != list(found[0][1].items()) for _, v in found[1:]):
        raise AuthorsAssetsError("newsgroup_text: several different 20NG class descriptions: "
                                 + ", ".join(w for w, _ in found))
    return dict(found[0][1]), found[0][0]


def newsgroup_queries(descriptions: Mapping[str, str], target_names: Sequence[str]) -> TextSplit:
    """The 20NG query split from ``{newsgroup: description}`` (its order is kept).

    Labels are each newsgroup's index in ``target_names`` (scikit-learn's order, the labels
    of the gallery).
    """
    index = {n: i for i, n in enumerate(target_names)}
    names = list(descriptions)
    return TextSplit(name="newsgroup_text", split="queries", items=[f"query/{n}" for n in names],
                     texts=[descriptions[n] for n in names],
                     labels=np.array([index[n] for n in names], np.int64),
                     classnames=list(target_names))


# --------------------------------------------------------------------------------------
# Applying them to splits and tasks; what the results record


def text_source(dataset: str, summaries: str | None = None) -> str:
    """How a text dataset's gallery texts are described in ``metrics.json``/``table.md``."""
    if summaries is not None:
        return f"LLM summaries (authors' assets: {summaries})"
    return RAW_SUMMARIZED if dataset in SUMMARY_SPECS else "raw text"


def apply_authors_assets_to_split(split: TextSplit, dataset: str,
                                  assets: str | os.PathLike | None,
                                  target_names: Sequence[str] | None = None
                                  ) -> tuple[TextSplit, dict[str, Any]]:
    """The split as the paper encoded it, and a record of the text source used.

    The gallery split of a summarised dataset (:data:`SUMMARY_SPECS`) gets the authors'
    summaries (every item, checked); the 20NG ``queries`` split gets the authors' class
    descriptions. Other splits are returned unchanged. Without ``assets``, nothing changes
    and the record says so.

    Args:
        split: a full split as the registry's reader returns it.
        dataset: its registry name.
        assets: the ``--authors-assets`` folder, or None.
        target_names: 20NG queries: the newsgroup names in label order (default
            ``split.classnames``).

    Returns:
        ``(split, record)``; record keys: ``texts`` (description) and ``file`` for a
        gallery, ``queries`` (+ ``file``) and ``comparable_with_paper`` for 20NG queries.

    Raises:
        AuthorsAssetsError: see :func:`read_summaries`, :func:`summary_replacements`,
            :func:`read_class_descriptions`.
    """
    spec = SUMMARY_SPECS.get(dataset)
    if dataset == "newsgroup_text" and split.split == "queries":
        if assets is None:
            return split, {"queries": OUR_QUERIES, "comparable_with_paper": False}
        names = list(target_names or split.classnames or [])
        desc, where = read_class_descriptions(assets, names)
        return newsgroup_queries(desc, names), {
            "queries": f"the authors' class descriptions (authors' assets: {where})",
            "file": where, "comparable_with_paper": True}
    if spec is None or split.split != spec.gallery_split:
        return split, {"texts": "raw text"}
    if assets is None:
        return split, {"texts": RAW_SUMMARIZED, "file": None}
    path = summary_file(assets, dataset)
    replaced = split.with_texts(summary_replacements(split, read_summaries(path), spec, path))
    return replaced, {"texts": text_source(dataset, path), "file": path}


def apply_authors_assets(task: RetrievalTask, assets: str | os.PathLike | None
                         ) -> tuple[RetrievalTask, dict[str, Any]]:
    """A text task with the paper's texts (see :func:`apply_authors_assets_to_split`).

    Returns:
        ``(task, record)``: ``record["gallery"]`` describes the gallery texts, and for 20NG
        ``record["queries"]`` the query wording and ``record["comparable_with_paper"]``.
        Image tasks are returned unchanged with an empty record.
    """
    if not isinstance(task.gallery, TextSplit):
        return task, {}
    gallery, g_rec = apply_authors_assets_to_split(task.gallery, task.name, assets)
    record: dict[str, Any] = {"gallery": g_rec["texts"], "gallery_file": g_rec.get("file")}
    query = task.query
    if task.name == "newsgroup_text" and isinstance(query, TextSplit):
        query, q_rec = apply_authors_assets_to_split(
            query, task.name, assets, target_names=task.gallery.classnames)
        record.update(queries=q_rec["queries"], queries_file=q_rec.get("file"),
                      comparable_with_paper=q_rec["comparable_with_paper"])
    return dataclasses.replace(task, query=query, gallery=gallery), record


def check_authors_assets(datasets: Sequence[str], assets: str | os.PathLike | None) -> None:
    """Fail fast, before any compute: every asset the ``datasets`` need is present and safe.

    Reads each needed summary pickle (not yet the coverage, which needs the data) and the
    20NG descriptions. A no-op without ``assets``.
    """
    if assets is None:
        return
    find_summaries_dir(assets)
    for ds in datasets:
        if ds in SUMMARY_SPECS:
            read_summaries(summary_file(assets, ds))
        if ds == "newsgroup_text":
            read_class_descriptions(assets, sorted(NEWSGROUP_DESCRIPTIONS))
