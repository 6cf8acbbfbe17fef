"""Where data lives: a local path or any fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``file://...``).

A location is a :class:`pathlib.Path` on local disk and a :class:`upath.UPath` on an object store, so code
says ``out / "markers" / name`` either way. What differs is how a file becomes visible whole:

- local disk: written under a temporary name beside it, fsynced, renamed into place;
- object store: written to local scratch, then uploaded as one object (a single PUT, or a multipart upload
  that becomes visible only when it completes). No rename: the object appears complete or not at all.

Credentials and endpoints come from the standard places (``AWS_*`` environment variables including
``AWS_ENDPOINT_URL``, ``~/.aws``, ...) or from ``storage_options`` in the run config, installed here as
fsspec's per-protocol defaults (:func:`configure_storage`). They are never part of a location's text, so
logging a location never shows a secret.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import fsspec
import fsspec.config
from upath import UPath

log = logging.getLogger(__name__)

Location = Path | UPath
"""A local path (``Path``) or an object-store location (``UPath``)."""

LOCAL_SCHEMES = {"", "file", "local"}
STORE_DEFAULTS: dict[str, dict[str, Any]] = {
    # several processes write the same prefixes: a cached listing would hide their objects
    "s3": {"use_listings_cache": False},
    "gs": {"use_listings_cache": False},
    "gcs": {"use_listings_cache": False},
    "abfs": {"use_listings_cache": False},
    "az": {"use_listings_cache": False},
}
EXTRAS = {"gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}
"""The optional extra that installs the backend of a scheme."""
SCRATCH_ENV = "REFINERY_SCRATCH"
_configured: dict[str, dict[str, Any]] = {}


class StorageError(RuntimeError):
    """A location that cannot be used as asked (unknown scheme, missing bucket, no permission...)."""


class StoreFailed(RuntimeError):
    """The store failed while a run was working on it (unreachable, erroring): a rerun resumes."""


_ONE_SLASH_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/(?!/)")


def scheme_of(where: str | os.PathLike[str]) -> str:
    text = str(where)
    if _ONE_SLASH_URL.match(text):  # "s3:/bucket" would otherwise become a local folder named "s3:"
        raise StorageError(f"{text}: not a URL (a store URL is scheme://bucket/prefix, e.g. s3://bucket/runs)")
    return urlsplit(text).scheme.lower() if "://" in text else ""


def absolute(where: str | os.PathLike[str] | Location) -> Location:
    """A local path made absolute (another process, or an executor in another working directory, finds it);
    a store URL as it is."""
    loc = location(where)
    return loc if is_remote(loc) else Path(loc).resolve()


def is_remote(where: str | os.PathLike[str] | Location) -> bool:
    if isinstance(where, UPath) and not isinstance(where, Path):
        return True
    return scheme_of(where) not in LOCAL_SCHEMES


def location(where: str | os.PathLike[str] | Location) -> Location:
    """The location ``where`` names: a ``Path`` for local paths and ``file://`` URLs, else a ``UPath``."""
    if isinstance(where, Path):
        return where
    if isinstance(where, UPath):
        return where
    text = os.fspath(where)
    scheme = scheme_of(text)
    if scheme in LOCAL_SCHEMES:
        return Path(urlsplit(text).path if scheme else text)
    try:
        fsspec.get_filesystem_class(scheme)
    except (ValueError, ImportError) as e:
        extra = f" (pip install 'cc-refinery[{EXTRAS[scheme]}]')" if scheme in EXTRAS else ""
        raise StorageError(f"{text}: no storage backend for scheme {scheme!r}{extra}: {e}") from None
    _apply_defaults(scheme)
    if scheme in ("s3", "s3a"):
        from pipeline.core import s3  # imports s3fs (0.3 s): only in a process that uses a store

        s3.install()
    return UPath(text)


def _apply_defaults(scheme: str) -> None:
    for protocol, defaults in STORE_DEFAULTS.items():
        if protocol == scheme:
            current = fsspec.config.conf.setdefault(protocol, {})
            for key, value in defaults.items():
                current.setdefault(key, value)


def configure_storage(options: dict[str, dict[str, Any]] | None) -> None:
    """Install ``{protocol: {option: value}}`` (e.g. ``{"s3": {"endpoint_url": ...}}``) for every filesystem
    this process (and its forked workers) opens, replacing what an earlier run of this process installed
    (a Prefect worker runs many flows). Spark executors get them with each task."""
    for protocol, values in _configured.items():
        current = fsspec.config.conf.get(protocol, {})
        for key in values:
            current.pop(key, None)
    _configured.clear()
    for protocol, values in (options or {}).items():
        fsspec.config.conf.setdefault(protocol, {}).update(values)
        _configured.setdefault(protocol, {}).update(values)
    for protocol in STORE_DEFAULTS:
        _apply_defaults(protocol)


def storage_config() -> dict[str, dict[str, Any]]:
    """What :func:`configure_storage` was given in this process, to pass on to executors."""
    return {protocol: dict(values) for protocol, values in _configured.items()}


SHIPPED_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_EC2_METADATA_DISABLED", SCRATCH_ENV,
    "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)  # fmt: skip
"""Environment variables a remote worker needs to reach the same store as the driver."""


def storage_context() -> dict[str, dict[str, Any]]:
    """This process's store settings (options and the standard environment variables), to hand to workers on
    other machines (Spark executors) inside their pickled task: never logged, never shown in a UI."""
    env = {name: os.environ[name] for name in SHIPPED_ENV if name in os.environ}
    return {"options": storage_config(), "env": env}


def apply_storage_context(context: dict[str, dict[str, Any]]) -> None:
    """On a worker: take the driver's store settings; the worker's own environment wins where it has one."""
    for name, value in context.get("env", {}).items():
        os.environ.setdefault(name, value)
    configure_storage(context.get("options"))


def scratch_dir() -> Path:
    """Local scratch space for temporary files (``$REFINERY_SCRATCH``, else the system temp folder)."""
    path = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


def temp_path_for(path: Location) -> Path:
    """Where a file bound for ``path`` is written before it becomes visible (local, unique to this process)."""
    if is_remote(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=scratch_dir())
        os.close(fd)
        return Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def publish(tmp: Path, path: Location) -> None:
    """Make the finished local file ``tmp`` visible as ``path`` in one step (rename, or one upload)."""
    if is_remote(path):
        try:
            path.fs.put_file(str(tmp), path.path)
        finally:
            tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


def write_file_atomic(path: Location, write: Callable[[BinaryIO], object]) -> None:
    """``write(file)`` to a temporary file, then publish it: readers see the old file or the whole new one."""
    path = location(path)
    tmp = temp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Location, data: bytes) -> None:
    """``data`` as the whole content of ``path``, atomically (one PUT on a store)."""
    path = location(path)
    if is_remote(path):
        path.fs.pipe_file(path.path, data)
    else:
        write_file_atomic(path, lambda f: f.write(data))


def read_bytes(path: Location | str) -> bytes:
    """The whole file; on a store one GET (``UPath.read_bytes`` asks for the object's info first)."""
    content = read_files([location(path)])[0]
    if isinstance(content, Exception):
        raise content
    return content


def remove(path: Location) -> None:
    """Delete one file; a missing file is fine."""
    path = location(path)
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm_file(path.path)
    else:
        path.unlink(missing_ok=True)


def remove_tree(path: Location) -> None:
    """Delete a folder (a prefix on a store) and everything under it; missing is fine."""
    path = location(path)
    if is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def list_names(folder: Location, suffix: str = "", prefix: str = "") -> list[str]:
    """Names of the files and folders directly in ``folder`` (one listing request on a store), sorted; none if
    missing."""
    folder = location(folder)
    if is_remote(folder):
        try:
            entries = _list_folder(folder, detail=False)
        except FileNotFoundError:
            return []
        here = folder.path.rstrip("/")  # some stores list an emptied folder as itself
        names = [entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries if entry.rstrip("/") != here]
    else:
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
    return sorted(n for n in names if n.endswith(suffix) and n.startswith(prefix) and not n.startswith("."))


def _list_folder(folder: UPath, detail: bool) -> list[Any]:
    """One listing request where the filesystem can (:meth:`pipeline.core.s3.SharedLoaderS3FileSystem.ls_folder`:
    a folder not written yet is then one request, not two), else its ``ls``."""
    ls_folder = getattr(folder.fs, "ls_folder", None)
    if ls_folder is not None:
        return ls_folder(folder.path, detail=detail)
    return folder.fs.ls(folder.path, detail=detail)


@dataclass(frozen=True)
class FileInfo:
    """What one listing says about a file: enough to see that it changed without reading it."""

    size: int
    mtime: float
    """Modification time, epoch seconds (inf when the store does not say)."""
    tag: str = ""
    """The store's version tag (ETag) when it gives one."""


def list_files(folder: Location | str) -> dict[str, FileInfo]:
    """The files directly in ``folder`` (hidden ones left out) with size and time, from one listing request."""
    folder = location(folder)
    out: dict[str, FileInfo] = {}
    if not is_remote(folder):
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.startswith(".") and entry.is_file():
                        st = entry.stat()
                        out[entry.name] = FileInfo(st.st_size, st.st_mtime, str(st.st_mtime_ns))
        except (FileNotFoundError, NotADirectoryError):
            pass
        return out
    try:
        entries = _list_folder(folder, detail=True)
    except FileNotFoundError:
        return out
    for entry in entries:
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if entry.get("type") != "file" or name.startswith("."):
            continue
        when = entry.get("LastModified", entry.get("mtime", entry.get("updated")))
        if isinstance(when, datetime):
            mtime = when.timestamp()
        elif isinstance(when, int | float):
            mtime = float(when)
        else:
            mtime = math.inf
        out[name] = FileInfo(int(entry.get("size") or 0), mtime, str(entry.get("ETag", entry.get("etag", ""))))
    return out


def read_files(paths: list[Location]) -> list[bytes | Exception]:
    """The contents of many small files (or the error reading each), fetched concurrently from a store.

    A report reads every finished part's stats: one request each is unavoidable, one after the other would
    make a run of thousands of parts on a store take minutes.
    """
    remote = [p for p in paths if is_remote(p)]
    fetched: dict[str, Any] = {}
    if remote:
        fs = remote[0].fs
        remote = [p for p in remote if p.fs is fs]  # files on another store are read one by one below
        # s3fs asks for a file's size before reading it in parallel chunks: not worth a HEAD for small files
        one_request = {"max_concurrency": 1} if "max_concurrency" in _parameters(fs._cat_file) else {}
        try:
            result = fs.cat([p.path for p in remote], on_error="return", **one_request)
        except Exception as e:  # no such file at all, or the store unreachable: each file says why below
            result = {p.path: e for p in remote}
        fetched = result if isinstance(result, dict) else {remote[0].path: result}
    out: list[bytes | Exception] = []
    for p in paths:
        if is_remote(p) and p.path in fetched:
            out.append(fetched[p.path])
            continue
        try:
            out.append(p.read_bytes())
        except Exception as e:  # reported per file by the caller
            out.append(e)
    return out


def write_files(files: dict[Location, bytes]) -> None:
    """Many small files, each written atomically; on a store uploaded concurrently (one PUT each), so a step that
    writes a file per part does not wait for one request after the other."""
    stores = {p.fs for p in files if is_remote(p)}
    fs = stores.pop() if len(stores) == 1 else None
    if fs is not None:
        fs.pipe({p.path: data for p, data in files.items() if is_remote(p)})
    for path, data in files.items():
        if fs is None or not is_remote(path):
            write_bytes_atomic(path, data)


def download_files(paths: list[Location], folder: Path) -> list[Path]:
    """Local copies of ``paths`` in ``folder`` (under their own names, which must differ), fetched concurrently
    from a store (one GET each); files on local disk are used where they are."""
    remote = [p for p in paths if is_remote(p)]
    if remote:
        folder.mkdir(parents=True, exist_ok=True)
        stores = {p.fs for p in remote}
        if len(stores) == 1:
            stores.pop().get([p.path for p in remote], [str(folder / p.name) for p in remote])
        else:
            for p in remote:
                p.fs.get_file(p.path, str(folder / p.name))
    return [folder / p.name if is_remote(p) else Path(p) for p in paths]


def _parameters(method: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        return set()


def arrow_source(path: Location) -> tuple[str, Any]:
    """``(path, filesystem)`` for pyarrow readers and datasets (``filesystem`` is None on local disk)."""
    path = location(path)
    return (path.path, path.fs) if is_remote(path) else (str(path), None)


@contextlib.contextmanager
def local_copy(path: Location) -> Iterator[Path]:
    """A local file with ``path``'s content (the file itself on local disk; a scratch download otherwise)."""
    path = location(path)
    if not is_remote(path):
        yield path
        return
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=scratch_dir())
    os.close(fd)
    try:
        path.fs.get_file(path.path, name)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


STORE_ERROR_MODULES = ("botocore", "aiobotocore", "s3fs", "aiohttp", "fsspec", "gcsfs", "adlfs", "google", "azure")
"""Exceptions of these libraries, and OSErrors, are store failures; anything else is the caller's own error."""


def is_store_error(e: BaseException) -> bool:
    return isinstance(e, OSError) or type(e).__module__.split(".")[0] in STORE_ERROR_MODULES


def describe_storage_error(e: BaseException, where: Location | str) -> str:
    """One line saying what is wrong with ``where`` and what to set, for the usual store failures (other
    exceptions are described as they are)."""
    text = f"{type(e).__name__}: {e}"
    if not is_store_error(e):
        return text
    lowered = text.lower()
    if "bucket does not exist" in lowered or "nosuchbucket" in lowered:
        return f"{where}: the bucket does not exist (create it, or fix the URL)"
    denied = ("signaturedoesnotmatch", "signature we calculated", "invalidaccesskeyid", "accessdenied", "access denied")
    if isinstance(e, PermissionError) or any(s in lowered for s in denied):
        return (
            f"{where}: access denied ({e}); check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "~/.aws, or storage_options in the run config) and that they may write there"
        )
    if any(s in lowered for s in ("nocredentials", "unable to locate credentials")):
        return f"{where}: no credentials found; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or storage_options"
    if any(s in lowered for s in ("could not connect", "connect timeout", "connection refused", "cannot connect")) or (
        isinstance(e, ConnectionError | TimeoutError)
    ):
        return f"{where}: the store is unreachable ({e}); check AWS_ENDPOINT_URL / endpoint_url and the network"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return f"{where}: disk full: no space left on device"
    if any(s in lowered for s in ("internal server error", "internal error", "service unavailable", "slow down")):
        return f"{where}: the store failed ({e}); rerun when it is healthy: the run resumes"
    return f"{where}: {text}"


def check_writable(folder: Location) -> None:
    """Fail early, with one clear line, if ``folder`` cannot be written (writes and deletes a probe object)."""
    folder = location(folder)
    if not is_remote(folder):
        folder.mkdir(parents=True, exist_ok=True)
        return
    probe = folder / f".refinery-probe-{os.getpid()}"
    try:
        probe.fs.pipe_file(probe.path, b"")
        probe.fs.rm_file(probe.path)
    except Exception as e:  # every store library has its own exception types
        raise StorageError(describe_storage_error(e, folder)) from e


def check_readable(path: Location) -> None:
    """Fail early, with one clear line, if ``path`` (a file or folder) cannot be read or does not exist."""
    path = location(path)
    try:
        found = path.exists()
    except Exception as e:
        raise StorageError(describe_storage_error(e, path)) from e
    if not found:
        bucket = path.path.split("/", 1)[0] if is_remote(path) else ""
        if bucket and bucket != path.path and not path.fs.exists(bucket):
            raise StorageError(f"{path}: the bucket does not exist (create it, or fix the URL)")
        raise StorageError(f"{path}: not found")
