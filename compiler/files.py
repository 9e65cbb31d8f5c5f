"""Writing files so that a reader never sees half of one: temporary file in the destination's
directory, fsync, rename over the destination, fsync the directory. An existing file survives
any failure. Used for plan files, weights, checkpoints, training binaries and text IR.

The temporary file is `<name>.tmp.<pid>`, as the C++ writer names it (csrc/tools/atomic_file.h),
so either one removes what a killed writer of the other left behind: each write first deletes
`<name>.tmp.<pid>` files next to the destination whose process no longer exists."""

from __future__ import annotations

import errno
import os

from .errors import EdgetuneError


def remove_stale_temp_files(path) -> int:
    """Delete `<basename>.tmp.<pid>` files beside `path` whose process is gone; returns how many."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    prefix = os.path.basename(path) + ".tmp."
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        digits = name[len(prefix):] if name.startswith(prefix) else ""
        if not digits.isdigit() or len(digits) > 9 or int(digits) in (0, os.getpid()):
            continue
        try:
            os.kill(int(digits), 0)
            continue  # alive
        except OSError as e:
            if e.errno != errno.ESRCH:
                continue  # alive but not ours to judge
        full = os.path.join(directory, name)
        try:
            if os.path.isfile(full) and not os.path.islink(full):
                os.unlink(full)
                removed += 1
        except OSError:
            pass
    return removed


def write_bytes_atomic(path, data: bytes, mode: int = 0o644, error=EdgetuneError) -> None:
    """Write `data` to `path` atomically with permissions `mode` (less the umask; an existing
    file's own permissions instead); failures raise `error` naming the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise error(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(directory):
        raise error(f"cannot write {path}: directory {directory} does not exist")
    remove_stale_temp_files(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:  # O_EXCL: never clobber (or follow a symlink planted at) a file this process did not create
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as e:
        raise error(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.path.isfile(path):  # an existing file keeps its permissions (a 0600 one stays private)
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, mode & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise error(f"cannot write {path}: {e.strerror or e}") from None
        raise
    try:  # make the rename itself durable; some filesystems refuse fsync on a directory
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
