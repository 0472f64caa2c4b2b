"""Atomic file writes (temporary file beside the target, fsync, rename) and checksummed safetensors files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from grokscope.store.errors import DamagedFileError, StoreWriteError

# mkstemp creates 0600 files; give written files the permissions open() would (0666 under the umask).
# The umask is read once, at import, because reading it means setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

# Safetensors metadata key holding the SHA-256 of the file's data section (the bytes after the header).
CHECKSUM_KEY = "grokscope.sha256"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old file or the new one, never a mix, and a
    failed write (a full disk, say) leaves the old file and no temporary behind. Raises :class:`StoreWriteError`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise StoreWriteError(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise StoreWriteError(path, e) from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically, with the SHA-256 of the data in the metadata (``CHECKSUM_KEY``).
    Tensors are detached, made contiguous and moved to CPU. The same tensors and metadata give the same bytes."""
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, tensors_to_bytes(clean, metadata))


def tensors_to_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file with the checksum in its metadata and a canonical header (sorted keys; safetensors itself
    writes the metadata in a per-process random order), so that equal contents give equal bytes."""
    raw = _st_save(tensors, metadata=dict(metadata or {}) or None)
    n = int.from_bytes(raw[:8], "little")
    header, data = json.loads(raw[8 : 8 + n]), raw[8 + n :]
    header.setdefault("__metadata__", {})[CHECKSUM_KEY] = hashlib.sha256(data).hexdigest()
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + data


def _damaged(path: Path, why: str) -> DamagedFileError:
    return DamagedFileError(path, f"{path}: damaged safetensors file ({why})")


def _check(path: Path, data: bytes) -> dict[str, str]:
    """The metadata of a complete safetensors file whose checksum (when it has one) matches; else DamagedFileError."""
    if len(data) < 8:
        raise _damaged(path, f"{len(data)} bytes, shorter than a header")
    n = int.from_bytes(data[:8], "little")
    if n > 100_000_000 or data[8:9] not in (b"{", b""):
        raise _damaged(path, "no safetensors header: not a safetensors file, or overwritten")
    if n > len(data) - 8:
        raise _damaged(path, f"truncated: the header alone needs {n + 8} bytes, the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + n])
        meta = header.pop("__metadata__", None) or {}
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        if not isinstance(meta, dict):
            raise TypeError("metadata is not an object")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise _damaged(path, f"unreadable header: {type(e).__name__}") from None
    if 8 + n + end != len(data):
        what = "truncated" if 8 + n + end > len(data) else "extra bytes at the end"
        raise _damaged(path, f"{what}: {len(data)} bytes where the header describes {8 + n + end}")
    stored = meta.get(CHECKSUM_KEY)
    if stored is not None and hashlib.sha256(data[8 + n :]).hexdigest() != stored:
        raise _damaged(path, "checksum mismatch: the data changed after it was written")
    return meta


def check_tensors_file(path: Path) -> dict[str, str]:
    """Verify a safetensors file (complete, checksum when stored) without building tensors; returns its metadata.
    Raises :class:`DamagedFileError` naming the file, or OSError when it cannot be read."""
    path = Path(path)
    return _check(path, path.read_bytes())


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file: (tensors, metadata), after the checks of :func:`check_tensors_file`.
    Raises :class:`DamagedFileError` (a ValueError) on a damaged file."""
    path = Path(path)
    data = path.read_bytes()
    meta = _check(path, data)
    try:
        tensors = _st_load(data)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise _damaged(path, f"{type(e).__name__}: {str(e).splitlines()[0][:120]}") from None
    return tensors, {k: v for k, v in meta.items() if k != CHECKSUM_KEY}
