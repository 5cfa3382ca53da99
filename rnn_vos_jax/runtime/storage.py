"""The one path layer: every file the project reads or writes goes through these functions.

Paths are strings: a local path, or a URL whose scheme fsspec knows (`gs://`, `s3://`, `az://`,
`hf://`, ...). They are served by `etils.epath` (what orbax and big_vision use) on its fsspec
backend, so `gs://` goes through gcsfs. We set EPATH_USE_TF=false before epath decides, for two
reasons: TensorFlow is imported only in the data room, and TensorFlow's own GCS client has a fixed
endpoint that no emulator can stand in for, so tests could not reach the code a pod runs. gcsfs,
google-cloud-storage (tensorboardX) and tensorstore (orbax's arrays) all honour an emulator
endpoint; `emulator_env` sets all three (docs/scale-out.md).

Atomic writes: locally, bytes go to a temporary file in the same folder that is renamed over the
target; on an object store a single object upload is already atomic (the object appears only when
the upload completes), while a rename is a copy plus a delete, so remote writes go straight to
their object. Either way a reader sees the old content or the whole new one.

Errors: a failed write raises `StorageError` (an OSError with the same errno) whose message is one
line naming the path and the cause; `exit_on_storage_error` turns it into that line and exit 74
for the commands.

No JAX and no TensorFlow here: scoring uses it.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import posixpath
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator

# Before etils picks a backend (it caches the choice on first use).
os.environ.setdefault("EPATH_USE_TF", "false")

import fsspec
from etils import epath

# Listings are cached per process by fsspec; several hosts share one workdir (and a process waits
# for another's files), so a cached listing would be a stale one.
fsspec.config.conf.setdefault("gs", {}).setdefault("use_listings_cache", False)

# Exit status of a command stopped by a storage error (BSD sysexits EX_IOERR).
EXIT_STORAGE = 74

# Causes that stop a run with one line instead of a traceback: nothing a retry inside the run fixes.
_FATAL_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
)


# How tensorstore (orbax's array writer) states the errno of a failed write.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)", re.IGNORECASE)


class StorageError(OSError):
    """A read or write that failed; str() is one line naming the path and the cause."""

    def __str__(self) -> str:
        return self.strerror if isinstance(self.strerror, str) else super().__str__()


def is_remote(path) -> bool:
    """True for URLs (`gs://...`), False for local paths."""
    return "://" in str(path)


def is_storage_url(path) -> bool:
    """True for a URL of a store fsspec serves (`gs://`, `s3://`, ...), False for local paths and
    for http(s):// and other network URLs (streams that OpenCV or FFmpeg read)."""
    path = str(path)
    scheme = path.split("://", 1)[0].lower() if is_remote(path) else ""
    return (
        bool(scheme) and scheme not in ("http", "https") and scheme in fsspec.available_protocols()
    )


def as_path(path) -> epath.Path:
    """The epath.Path for `path` (for libraries, such as orbax, that take one)."""
    return epath.Path(path)


def join(base, *parts) -> str:
    """os.path.join for local paths, '/'-joining for URLs."""
    base = str(base)
    if is_remote(base):
        return posixpath.join(base, *map(str, parts))
    return os.path.join(base, *map(str, parts))


def dirname(path) -> str:
    return posixpath.dirname(str(path)) if is_remote(path) else os.path.dirname(str(path))


def basename(path) -> str:
    return posixpath.basename(str(path).rstrip("/"))


def absolute(path) -> str:
    """URLs unchanged; local paths made absolute with ~ expanded."""
    path = str(path)
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def exists(path) -> bool:
    return as_path(path).exists()


def isdir(path) -> bool:
    """A local folder, or a prefix with at least one object under it."""
    return as_path(path).is_dir()


def isfile(path) -> bool:
    return as_path(path).is_file()


def size(path) -> int:
    """Bytes in the file."""
    return int(as_path(path).stat().length) if is_remote(path) else os.path.getsize(path)


def stat(path) -> tuple[int, int]:
    """(bytes, modification time in ns) of a file: a cheap identity (remote times are whole
    seconds)."""
    if not is_remote(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    st = as_path(path).stat()
    return int(st.length or 0), int(st.mtime or 0) * 10**9


def listdir(path) -> list[str]:
    """Sorted names (not paths) of the entries of a folder or prefix."""
    return sorted(p.name for p in as_path(path).iterdir())


def glob(pattern) -> list[str]:
    """Sorted paths matching a pattern whose wildcards are in its last component."""
    pattern = str(pattern)
    folder, name = (posixpath if is_remote(pattern) else os.path).split(pattern)
    if not exists(folder or "."):
        return []
    return sorted(str(p) for p in as_path(folder or ".").glob(name))


def makedirs(path) -> None:
    """Creates a local folder and its parents; object stores have no folders (a no-op there)."""
    if not is_remote(path):
        _checked(path, "create", lambda: os.makedirs(path, exist_ok=True))


def open(path, mode: str = "r"):
    """A file object; writing modes create the local folder first. Not atomic: see write_*."""
    if any(m in mode for m in "wa"):
        makedirs(dirname(path) or ".")
    verb = "write" if any(m in mode for m in "wa") else "read"
    return _checked(path, verb, lambda: as_path(path).open(mode))


def read_bytes(path) -> bytes:
    return as_path(path).read_bytes()


def read_text(path) -> str:
    return as_path(path).read_text()


def write_bytes(path, data: bytes) -> None:
    """Writes `data` to `path` atomically (see the module docstring), creating its folder."""
    path = str(path)
    if is_remote(path):
        _checked(path, "write", lambda: as_path(path).write_bytes(data))
        return
    makedirs(os.path.dirname(os.path.abspath(path)))
    tmp = f"{path}.tmp{os.getpid()}"

    def write():
        try:
            with builtins.open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    _checked(path, "write", write)


def write_text(path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically, creating its folder."""
    write_bytes(path, text.encode("utf-8"))


def append_text(path, text: str) -> None:
    """Appends `text` to a file. An object cannot be appended to, so remotely the whole object is
    rewritten (fine for logs of a few MB, such as metrics.jsonl)."""
    path = str(path)
    if not is_remote(path):
        makedirs(os.path.dirname(os.path.abspath(path)))

        def append():
            with builtins.open(path, "a") as f:
                f.write(text)

        _checked(path, "write", append)
        return
    old = read_text(path) if exists(path) else ""
    write_text(path, old + text)


def remove(path, *, missing_ok: bool = True) -> None:
    if missing_ok and not exists(path):
        return
    _checked(path, "remove", lambda: as_path(path).unlink())


def rmtree(path) -> None:
    if exists(path):
        _checked(path, "remove", lambda: as_path(path).rmtree())


def rename(src, dst) -> None:
    """Moves a file or folder, replacing a file at `dst`. On an object store this copies every
    object and deletes the originals (not atomic): use it for moves, not for atomicity."""
    _checked(dst, "write", lambda: as_path(src).replace(dst))


def copy(src, dst) -> None:
    """Copies one file (either side local or remote)."""
    if not is_remote(src) and not is_remote(dst):
        makedirs(os.path.dirname(os.path.abspath(dst)))
        _checked(dst, "write", lambda: shutil.copyfile(src, dst))
        return
    write_bytes(dst, read_bytes(src))


@contextlib.contextmanager
def local_file(path) -> Iterator[str]:
    """A local path holding `path`'s bytes, for libraries that need a real file (OpenCV, PyAV,
    torch.load): the path itself when local, else a temporary download deleted on exit."""
    path = str(path)
    if not is_remote(path):
        yield path
        return
    suffix = os.path.splitext(path)[1]
    with tempfile.TemporaryDirectory(prefix="rnn_vos_jax_") as tmp:
        local = os.path.join(tmp, "file" + suffix)
        with builtins.open(local, "wb") as f:
            f.write(read_bytes(path))
        yield local


@contextlib.contextmanager
def staged_output(path) -> Iterator[str]:
    """A local path to write `path` through: the path itself's temporary sibling when local
    (renamed over `path` on success), a temporary file uploaded on success when remote. On an
    exception nothing reaches `path`; an OSError while writing the temporary file (a full disk)
    is raised as a StorageError naming `path`."""
    path = str(path)
    suffix = os.path.splitext(path)[1]
    if not is_remote(path):
        makedirs(os.path.dirname(os.path.abspath(path)))
        tmp = f"{path}.tmp{os.getpid()}{suffix}"
        try:
            with _named(path, "write"):
                yield tmp
            _checked(path, "write", lambda: os.replace(tmp, path))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    with tempfile.TemporaryDirectory(prefix="rnn_vos_jax_") as tmp:
        local = os.path.join(tmp, "file" + suffix)
        with _named(path, "write"):
            yield local
        with builtins.open(local, "rb") as f:
            write_bytes(path, f.read())


@contextlib.contextmanager
def _named(path, verb: str) -> Iterator[None]:
    """An OSError in the block becomes a StorageError naming `path` (errno kept)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        raise storage_error(path, verb, e) from e


def _checked(path, verb: str, fn):
    """Runs fn(); an OSError becomes a StorageError naming `path` (errno kept)."""
    with _named(path, verb):
        return fn()


def storage_error(path, verb: str, error: BaseException) -> StorageError:
    """A StorageError "cannot VERB PATH: CAUSE" carrying the errno of `error` when it has one."""
    code = getattr(error, "errno", None)
    cause = os.strerror(code) if code else (str(error).splitlines() or [type(error).__name__])[0]
    return StorageError(code, f"cannot {verb} {path}: {cause}")


def is_fatal(error: BaseException) -> bool:
    """A full disk, a quota or a permission/read-only refusal (what a rerun cannot outlast)."""
    return isinstance(error, OSError) and error.errno in _FATAL_ERRNOS


def fatal_errno(error: BaseException) -> int | None:
    """The errno of a fatal cause (is_fatal) of `error` or of the errors it was raised from; also
    found in the message, as libraries that write in C++ report an OS error as text (tensorstore,
    under orbax: "RESOURCE_EXHAUSTED: Error writing ... [os_error_code='28']")."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if is_fatal(error):
            return error.errno
        text = str(error)
        found = _OS_ERROR_CODE.search(text)
        if found and int(found.group(1)) in _FATAL_ERRNOS:
            return int(found.group(1))
        for code in _FATAL_ERRNOS:
            if os.strerror(code) in text:
                return code
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def exit_on_storage_error(*, hard: bool = False) -> Iterator[None]:
    """For a command's main: a StorageError whose cause is fatal (is_fatal) prints its one line
    and exits EXIT_STORAGE instead of a traceback. What finished before it stays (every writer here
    is atomic), so a rerun after the space is back resumes. `hard` exits at once (os._exit) after
    flushing: for a training process, whose checkpointer's background writers would otherwise
    print tracebacks of their own while the interpreter shuts down."""
    try:
        yield
    except OSError as e:
        if not is_fatal(e):
            raise
        line = str(e) if isinstance(e, StorageError) else f"{e.filename or ''}: {e.strerror}"
        print(f"error: {line}", file=sys.stderr, flush=True)
        if hard:
            sys.stdout.flush()
            os._exit(EXIT_STORAGE)
        raise SystemExit(EXIT_STORAGE) from None


def emulator_env(endpoint: str) -> dict[str, str]:
    """Environment variables pointing every storage client the project uses at a GCS emulator
    such as `http://127.0.0.1:9023`: gcsfs and google-cloud-storage (STORAGE_EMULATOR_HOST),
    tensorstore, which writes orbax's arrays (TENSORSTORE_GCS_HTTP_URL), and gcsfs's bucket-type
    probe, a gRPC control-plane call emulators do not serve (off)."""
    return {
        "STORAGE_EMULATOR_HOST": endpoint,
        "TENSORSTORE_GCS_HTTP_URL": endpoint,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "EPATH_USE_TF": "false",
    }
