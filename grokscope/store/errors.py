"""The run store's errors. Each message is one line that names the file and says how to recover."""

from __future__ import annotations

import errno as _errno
from pathlib import Path


class RunError(Exception):
    """A problem with a run directory that the user can fix; the message is one line."""


class DamagedFileError(RunError, ValueError):
    """A stored file is damaged (truncated, overwritten, not the format its name says); ``path`` names it,
    ``detail`` (when given) is what the reader found wrong, without the path or advice around it.
    Also a ValueError, as :func:`~grokscope.store.files.load_tensors` raised before."""

    def __init__(self, path: Path | str, message: str, detail: str | None = None):
        super().__init__(message)
        self.path = Path(path)
        self.detail = detail


class StoreWriteError(RunError, OSError):
    """Writing a file of the store failed (a full disk, a read-only folder, an I/O error). The write was
    atomic, so the file (and everything else stored) is as it was before. Also an OSError with its errno."""

    def __init__(self, path: Path | str, err: OSError):
        OSError.__init__(self, err.errno, err.strerror or str(err), str(path))
        self.path = Path(path)
        reason = (err.strerror or str(err)).rstrip(".")
        self.message = f"cannot write {path}: {reason[:1].lower()}{reason[1:]}"

    @property
    def disk_full(self) -> bool:
        return self.errno in (_errno.ENOSPC, _errno.EDQUOT)

    def add_hint(self, hint: str) -> None:
        self.message = f"{self.message}; {hint}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across process pools despite the custom __init__
        err = OSError(self.errno, self.strerror)
        return (_rebuild_write_error, (str(self.path), err, self.message))


def _rebuild_write_error(path: str, err: OSError, message: str) -> StoreWriteError:
    e = StoreWriteError(path, err)
    e.message = message
    return e
