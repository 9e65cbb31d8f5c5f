"""Writing files so that a reader never sees half of one: temporary file in the destination's
directory, fsync, rename over the destination, fsync the directory. An existing file survives
any failure. Used for plan files, weights, training binaries and text IR."""

from __future__ import annotations

import os
import tempfile

from .errors import EdgetuneError


def write_bytes_atomic(path, data: bytes, mode: int = 0o644, error=EdgetuneError) -> None:
    """Write `data` to `path` atomically with permissions `mode` (less the umask); failures
    raise `error` naming the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise error(f"cannot write {path}: it is a directory; give a file name")
    if not os.path.isdir(directory):
        raise error(f"cannot write {path}: directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as e:
        raise error(f"cannot write {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
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
