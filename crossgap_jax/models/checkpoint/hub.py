"""Fetching weights: the download cache, offline mode, URL downloads, the Hugging Face hub.

Nothing is fetched when the network is unavailable or ``HF_HUB_OFFLINE`` /
``CROSSGAP_JAX_OFFLINE`` is set: a missing file raises :class:`CheckpointNotFoundError`,
whose message says which file to fetch (URL, or hub repo and filenames) and where to put
it. ``huggingface_hub`` is imported inside the functions that use it, when a hub source
is used (the client reads its settings at import; tests replace its functions).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator

from tqdm.auto import tqdm

from crossgap_jax.fileio import OutputWriteError, atomic_open, atomic_write_json, sha256_file
from crossgap_jax.models.checkpoint.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ChecksumError,
)

_TRUE = ("1", "true", "yes", "on")
#: a Hugging Face hub id (``org/name``, optionally ``@revision``).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")


def default_cache_dir() -> str:
    """``$CROSSGAP_JAX_CACHE``, else ``$XDG_CACHE_HOME/crossgap_jax`` (``~/.cache/...``)."""
    if os.environ.get("CROSSGAP_JAX_CACHE"):
        return os.path.expanduser(os.environ["CROSSGAP_JAX_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "crossgap_jax")


OFFLINE_VARS = ("CROSSGAP_JAX_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")

#: seconds the reachability probe waits (DNS + TCP connect) before calling a host offline.
PROBE_TIMEOUT = 3.0
_REACHABLE: dict[tuple[str, int], bool] = {}


def is_offline() -> bool:
    """True when one of :data:`OFFLINE_VARS` (``CROSSGAP_JAX_OFFLINE``, ``HF_HUB_OFFLINE``,
    ``HF_DATASETS_OFFLINE``) is set to a true value (read at call time)."""
    return _offline_var() is not None


def _offline_var() -> str | None:
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the host of ``url`` accepts a TCP connection within ``timeout`` seconds.

    One probe per host and process (the answer is cached), so that without a network a
    load fails in seconds instead of spending a minute in the hub client's retries. Name
    resolution is bounded too (the probe runs in a thread that is not waited for beyond
    ``timeout``). Behind an HTTP(S) proxy (``HTTPS_PROXY`` / ``ALL_PROXY`` set) the direct
    probe says nothing, so the host is assumed reachable.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (80 if parts.scheme == "http" else 443)
    if not host or any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                                                   "all_proxy")):
        return True
    key = (host, port)
    if key not in _REACHABLE:
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection(key, timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        t = threading.Thread(target=probe, daemon=True, name=f"probe-{host}")
        t.start()
        t.join(timeout + 0.5)
        _REACHABLE[key] = bool(result and result[0])
    return _REACHABLE[key]


@contextlib.contextmanager
def hub_client_offline(active: bool) -> Iterator[None]:
    """While active, put the ``huggingface_hub`` client itself in offline mode.

    ``local_files_only=True`` alone is not enough: the client reads ``HF_HUB_OFFLINE``
    once, at import, and otherwise still makes requests of its own (e.g. its user-agent
    registry) - a variable set later, or a failed probe, must reach it too.
    """
    if not active:
        yield
        return
    # lazy: the hub client reads HF_* settings at import (tests and users set them)
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def hub_offline_reason() -> str | None:
    """Why the Hugging Face hub is not to be contacted (an offline variable, or its host
    did not answer the probe), or None when it may be."""
    var = _offline_var()
    if var is not None:
        return f"offline mode is on ({var}={os.environ[var]})"
    # lazy: the hub client reads HF_* settings at import (tests and users set them)
    from huggingface_hub import constants

    if not host_reachable(constants.ENDPOINT):
        return (f"{constants.ENDPOINT} cannot be reached (no answer within "
                f"{PROBE_TIMEOUT:g} s: no network?)")
    return None


# ----------------------------------------------------------------------------------------
# Downloads
# ----------------------------------------------------------------------------------------


def _sidecar(path: str) -> str:
    return path + ".sha256.json"


def verified_sha256(path: str, expected: str) -> bool:
    """Whether ``path`` has sha256 ``expected``; remembers a match in a sidecar file keyed by
    size and mtime so that the (large) file is hashed once, not on every load."""
    st = os.stat(path)
    try:
        with open(_sidecar(path)) as f:
            memo = json.load(f)
        if (memo.get("sha256") == expected and memo.get("size") == st.st_size
                and memo.get("mtime_ns") == st.st_mtime_ns):
            return True
    except (OSError, ValueError):
        pass
    if sha256_file(path) != expected:
        return False
    try:
        atomic_write_json(_sidecar(path),
                          {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    except OSError:  # a read-only cache still works, it just hashes again next time
        pass
    return True


def download_url(url: str, dest: str, sha256: str | None = None, *, progress: bool = True,
                 timeout: float = 60.0) -> str:
    """Fetch ``url`` to ``dest`` (atomically: a temporary file renamed into place).

    A file already at ``dest`` with the right sha256 is reused; one with the wrong sha256
    is downloaded again (with a warning).

    Raises:
        CheckpointNotFoundError: offline mode, or the download failed (no network, HTTP
            error); the message gives the URL and ``dest``.
        ChecksumError: the downloaded bytes do not have ``sha256``.
    """
    if os.path.isfile(dest):
        if sha256 is None or verified_sha256(dest, sha256):
            return dest
        warnings.warn(f"{dest} exists but its sha256 is not {sha256}; downloading it again",
                      stacklevel=2)
    elif os.path.exists(dest):
        raise CheckpointError(f"{dest} exists and is not a regular file")

    how = (f"Download it yourself ({url}) to {dest}" + (f" (sha256 {sha256})" if sha256 else "")
           + ", or pass checkpoint=PATH to a copy of it.")
    if is_offline():
        raise CheckpointNotFoundError(
            f"checkpoint not in the cache and offline mode is on ({_offline_var()}). {how}",
            url=url, target=dest)

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as src, atomic_open(dest) as out:
            total = src.headers.get("Content-Length") if getattr(src, "headers", None) else None
            with tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                      unit_divisor=1024, desc=os.path.basename(dest),
                      disable=not progress) as bar:
                while block := src.read(1 << 20):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            got = h.hexdigest()
            if sha256 is not None and got != sha256:  # raised inside: the file is discarded
                raise ChecksumError(f"downloaded {url} has sha256 {got}, expected {sha256}; "
                                    f"the file was discarded. Try again, or fetch it yourself "
                                    f"to {dest}.")
    except (OutputWriteError, ChecksumError):  # a full / read-only cache folder, bad bytes
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise CheckpointNotFoundError(f"could not download {url}: {e}. {how}", url=url,
                                      target=dest) from e
    if sha256 is not None:
        verified_sha256(dest, sha256)
    return dest


def hub_split(repo: str) -> tuple[str, str | None]:
    repo_id, _, revision = repo.partition("@")
    return repo_id, (revision or None)


def hub_fetch(repo: str, candidates: tuple[str, ...], *, required: bool = True,
               optional: bool = False, then: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """Download the first of ``candidates`` that exists in hub repo ``repo`` (``id@rev``).

    Files already in the Hugging Face cache are used without network access in offline
    mode (``HF_HUB_OFFLINE`` / ``CROSSGAP_JAX_OFFLINE``, read at call time).

    Args:
        required: raise when the repo has none of the candidates (else return None).
        then: files needed after this one, named in the offline message so that one
            download fetches everything.
        optional: return None instead of raising in every case where nothing is found
            (unreachable hub included).

    Returns:
        ``(filename, local path)``, or None (see ``required`` / ``optional``).

    Raises:
        CheckpointNotFoundError: the repo does not exist, or the hub is unreachable and no
            candidate is in the cache; the message names the repo and files to fetch.
    """
    # lazy: the hub client reads HF_* settings at import (tests and users set them)
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = hub_split(repo)
    unreachable: list[str] = []
    cause: Exception | None = None
    offline = hub_offline_reason()  # probed once per process: no minute of retries
    for filename in candidates:
        try:
            with hub_client_offline(offline is not None):
                path = hf_hub_download(repo_id, filename, revision=revision,
                                       local_files_only=offline is not None)
            return filename, path
        except LocalEntryNotFoundError as e:  # offline / no network, not in the cache
            unreachable.append(filename)
            cause = e
        except EntryNotFoundError:  # the repo has no such file: try the next candidate
            continue
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            if optional:
                return None
            raise CheckpointNotFoundError(
                f"Hugging Face hub repo {repo!r} not found (or gated / private): {e}",
                repo_id=repo_id, filenames=candidates) from e
    if optional:
        return None
    if unreachable:
        rev = f" --revision {revision}" if revision else ""
        needed = [" or ".join(unreachable)] + [f for f in then if f not in unreachable]
        first = [unreachable[0]] + [f.split(" or ")[0] for f in then]
        why = offline or "the Hugging Face hub is unreachable"
        raise CheckpointNotFoundError(
            f"{why}, and {unreachable[0]} of {repo_id!r} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}; HF_HOME / HF_HUB_CACHE choose another). Files needed "
            f"from hub repo {repo_id!r}: {'; '.join(needed)}. Fetch them where there is network "
            f"access, e.g. `hf download {repo_id} {' '.join(first)}{rev}`, and copy the cache "
            f"over; or put the files in one directory and pass checkpoint=DIR.",
            repo_id=repo_id, filenames=tuple(first)) from cause
    if required:
        raise CheckpointNotFoundError(
            f"hub repo {repo!r} has none of {', '.join(candidates)}", repo_id=repo_id,
            filenames=candidates)
    return None


def hub_sha256(path: str) -> str | None:
    """The sha256 of an LFS file in the Hugging Face cache is its blob's name."""
    real = os.path.realpath(path)
    blob = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    return None


def hub_snapshot(repo: str, cache_dir: str | None, allow_patterns: list[str],
                 needed: tuple[str, ...]) -> str:
    """Local folder of the files of hub repo ``repo`` matching ``allow_patterns`` (cache
    first; nothing is requested in offline mode or without network).

    Raises:
        CheckpointNotFoundError: the repo cannot be fetched; the message names the repo,
            the ``needed`` files and the command that fetches them.
    """
    try:
        # lazy: the hub client reads HF_* settings at import (tests and users set them)
        from huggingface_hub import snapshot_download

        offline = hub_offline_reason() is not None
        with hub_client_offline(offline):
            return snapshot_download(repo, cache_dir=cache_dir, local_files_only=offline,
                                     allow_patterns=allow_patterns)
    except Exception as e:  # noqa: BLE001 - any hub failure means "not available here"
        raise CheckpointNotFoundError(
            f"cannot fetch hub repo {repo!r} ({type(e).__name__}: {e}). Download it with "
            f"`huggingface-cli download {repo}` ({', '.join(needed)}) and pass "
            f"checkpoint=<that directory>.", repo_id=repo, filenames=needed) from e
