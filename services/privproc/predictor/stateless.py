"""The predictor keeps nothing: no core dumps, and no file-system writes once it serves.

:func:`harden_process` turns core dumps off for the process (``prctl
PR_SET_DUMPABLE 0`` and ``RLIMIT_CORE`` 0): a crash must not write request
memory to disk, and a non-dumpable process cannot be attached to by another
process of the same user (``/proc/<pid>/mem`` and ``ptrace`` need
``CAP_SYS_PTRACE`` then).

:func:`forbid_disk_writes` installs a :func:`sys.addaudithook` hook that
refuses, with :class:`PermissionError`, every file-system write Python code
asks for outside an allow-list (``/dev/null`` by default): opening a file
for writing, creating, renaming, linking, removing or truncating files and
directories, changing their metadata, the ``shutil`` copy, move, archive
and remove helpers, any ``sqlite3`` connection (even ``:memory:``, whose
temporary files SQLite itself places) and ``tempfile.mkstemp`` /
``mkdtemp``. Already-open descriptors (``open(fd, "w")``, ``os.ftruncate``)
are allowed: the standard streams and sockets are written through them, and
a descriptor opened for writing after the guard went in was checked then.
:func:`tempfile.gettempdir` finds no usable directory under the guard (its
probe write is refused), so ``tempfile`` calls without ``dir`` fail with
:class:`FileNotFoundError`. Each refusal emits ``predictor.write_refused`` with the audit event name
only (never the path) and is counted (:func:`refused_writes`). Installing
it also sets :data:`sys.dont_write_bytecode`: caching bytecode for a module
first imported late would be refused anyway.

Its limits, honestly: an audit hook sees only what goes through the Python
runtime. Native code that calls the OS itself (torch, tokenizers, gRPC's C
core, OpenSSL, anything loaded with ctypes) bypasses it entirely, and audit
hooks are a debugging and auditing aid, not a sandbox (CPython says as much:
code running in the process could defeat it). That is why the CVM image
also mounts its root file system read-only with no writable disk, so the
guard is a second line that makes mistakes in our own Python code loud, not
the boundary itself. The hook cannot be removed once installed; only its
counter is observable.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from privproc import events
from privproc.errors import ConfigError

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4

#: The message of every refusal: fixed, so no path ever reaches a log or a peer.
REFUSAL_MESSAGE = "file-system writes are disabled in the predictor"

# For each audit event that writes: the argument positions of the paths it
# changes, each with the position of its ``dir_fd`` argument (None: none).
_PathArgs = tuple[tuple[int, int | None], ...]
_WRITE_EVENTS: dict[str, _PathArgs] = {
    "os.mkdir": ((0, 2),),  # path, mode, dir_fd
    "os.rename": ((0, 2), (1, 3)),  # src, dst, src_dir_fd, dst_dir_fd (os.replace too)
    "os.remove": ((0, 1),),  # path, dir_fd (os.unlink too)
    "os.rmdir": ((0, 1),),  # path, dir_fd
    "os.link": ((1, 3),),  # src, dst, src_dir_fd, dst_dir_fd: the new entry is dst
    "os.symlink": ((1, 2),),  # src, dst, dir_fd
    "os.truncate": ((0, None),),  # fd_or_path, length (os.ftruncate too)
    "os.chmod": ((0, 2),),  # path, mode, dir_fd (os.fchmod, os.lchmod too)
    "os.chown": ((0, 3),),  # path, uid, gid, dir_fd (os.fchown, os.lchown too)
    "os.utime": ((0, 3),),  # path, times, ns, dir_fd
    "os.setxattr": ((0, None),),  # path, attribute, value, flags
    "os.removexattr": ((0, None),),  # path, attribute
    "os.chflags": ((0, None),),  # path, flags (BSD and macOS)
    "shutil.copyfile": ((1, None),),  # src, dst
    "shutil.copymode": ((1, None),),  # src, dst
    "shutil.copystat": ((1, None),),  # src, dst
    "shutil.copytree": ((1, None),),  # src, dst
    "shutil.rmtree": ((0, 1),),  # path, dir_fd
    "shutil.move": ((0, None), (1, None)),  # src, dst
    "shutil.chown": ((0, None),),  # path, user, group
    "shutil.make_archive": ((0, None),),  # base_name, format, root_dir, base_dir
    "shutil.unpack_archive": ((1, None),),  # filename, extract_dir, format
    "tempfile.mkstemp": ((0, None),),  # fullpath
    "tempfile.mkdtemp": ((0, None),),  # fullpath
}
#: Every audit event the guard looks at (``open`` and ``sqlite3.connect`` are checked on their own).
WATCHED_EVENTS: frozenset[str] = frozenset({"open", "sqlite3.connect", *_WRITE_EVENTS})
# Descriptor operations allowed whatever the descriptor: it was checked when it was opened.
_FD_ALLOWED = frozenset({"open", "os.truncate"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_MODES = frozenset("wax+")


class _Guard:
    """The installed hook's state: the allow-list and the refusal count."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        self.allow = allow
        self.refused = 0
        self.lock = threading.Lock()
        # Set while a refusal is being reported: the report must not be refused in turn.
        self.reporting = threading.local()

    def hook(self, event: str, args: tuple[object, ...]) -> None:
        if event not in WATCHED_EVENTS:
            return
        if not self._permits(event, args):
            self._refuse(event)

    def _permits(self, event: str, args: tuple[object, ...]) -> bool:
        if event == "sqlite3.connect":
            return False  # SQLite writes journals and temporary files of its own accord
        if event == "open":
            return not _opens_for_writing(args) or self._path_allowed(event, args[0], None)
        for path_index, fd_index in _WRITE_EVENTS[event]:
            if path_index >= len(args):
                return False
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
            if not self._path_allowed(event, args[path_index], dir_fd):
                return False
        return True

    def _path_allowed(self, event: str, target: object, dir_fd: object) -> bool:
        if isinstance(target, int) and not isinstance(target, bool):
            if event in _FD_ALLOWED:
                return True
            resolved = _fd_path(target)  # a metadata change through a descriptor: where does it point?
            return resolved is not None and self._inside(resolved)
        path = _as_path(target)
        if path is None:
            return False
        if not os.path.isabs(path):
            if isinstance(dir_fd, int) and not isinstance(dir_fd, bool) and dir_fd >= 0:
                base = _fd_path(dir_fd)
                if base is None:
                    return False
                path = os.path.join(base, path)
            else:
                path = os.path.abspath(path)
        # Both the entry itself and what it points to must be inside: a symlink inside the
        # allow-list does not open a way out of it.
        entry = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
        return self._inside(entry) and self._inside(os.path.realpath(path))

    def _inside(self, path: str) -> bool:
        return any(path == allowed or path.startswith(allowed.rstrip("/") + "/") for allowed in self.allow)

    def _refuse(self, event: str) -> None:
        with self.lock:
            self.refused += 1
        if not getattr(self.reporting, "active", False):
            self.reporting.active = True
            try:
                events.emit(events.PredictorWriteRefused(operation=event))
            finally:
                self.reporting.active = False
        raise PermissionError(REFUSAL_MESSAGE)


def _opens_for_writing(args: tuple[object, ...]) -> bool:
    """Whether an ``open`` audit event (path, mode, flags) opens for writing or creates."""
    mode = args[1] if len(args) > 1 else None
    flags = args[2] if len(args) > 2 else None
    if isinstance(mode, str) and _WRITE_MODES.intersection(mode):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def _as_path(target: object) -> str | None:
    """A path argument as text (``str``, ``bytes`` or path-like, such as a ``DirEntry``)."""
    try:
        raw = os.fspath(target)  # type: ignore[call-overload]
    except TypeError:
        return None
    return os.fsdecode(raw) if isinstance(raw, bytes) else raw


def _fd_path(fd: int) -> str | None:
    """The path an open descriptor names (Linux ``/proc``), or ``None`` (sockets, pipes, no ``/proc``)."""
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return target if target.startswith("/") else None


_INSTALL_LOCK = threading.Lock()
_GUARD: _Guard | None = None


def forbid_disk_writes(allow: Sequence[str | Path] = ("/dev/null",)) -> None:
    """Refuse every file-system write from Python code outside ``allow``, from now on.

    Each ``allow`` entry permits itself and, if it is a directory, what is
    below it (paths are resolved, symlinks included, when installed).
    Calling this again with the same allow-list does nothing; with another
    one it raises :class:`ConfigError`: an installed hook cannot be changed.
    """
    global _GUARD  # noqa: PLW0603 - the one hook per process, installed once
    resolved = tuple(sorted({os.path.realpath(os.path.abspath(os.fspath(entry))) for entry in allow}))
    with _INSTALL_LOCK:
        if _GUARD is not None:
            if _GUARD.allow != resolved:
                raise ConfigError("the write guard is already installed with another allow-list")
            return
        guard = _Guard(resolved)
        sys.dont_write_bytecode = True
        sys.addaudithook(guard.hook)
        _GUARD = guard


def write_guard_installed() -> bool:
    """Whether :func:`forbid_disk_writes` installed its hook in this process."""
    return _GUARD is not None


def refused_writes() -> int:
    """How many writes the guard has refused so far (0 when it is not installed)."""
    guard = _GUARD
    if guard is None:
        return 0
    with guard.lock:
        return guard.refused


# --- core dumps -------------------------------------------------------------------


def _prctl(option: int, value: int = 0) -> int:
    if not sys.platform.startswith("linux"):
        raise ConfigError("process hardening needs Linux")
    # The running interpreter already links libc: no library search (which may spawn ldconfig).
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    result = int(prctl(option, value, 0, 0, 0))
    if result < 0:
        raise ConfigError("prctl failed")
    return result


def harden_process() -> None:
    """Turn core dumps off: ``PR_SET_DUMPABLE`` 0 and ``RLIMIT_CORE`` (0, 0).

    Raises :class:`ConfigError` if either cannot be set (not Linux, or the
    kernel refused): a predictor that could dump its memory must not serve.
    """
    _prctl(_PR_SET_DUMPABLE, 0)
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        raise ConfigError("could not disable core dumps") from exc
    if not process_is_hardened():
        raise ConfigError("core dumps are still enabled")


def process_is_hardened() -> bool:
    """Whether the process is not dumpable and its core-size limit is 0 (read back from the kernel)."""
    try:
        dumpable = _prctl(_PR_GET_DUMPABLE)
    except ConfigError:
        return False
    return dumpable == 0 and resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)


__all__ = [
    "REFUSAL_MESSAGE",
    "WATCHED_EVENTS",
    "forbid_disk_writes",
    "harden_process",
    "process_is_hardened",
    "refused_writes",
    "write_guard_installed",
]
