"""Files written atomically and files identified by content.

Every file sgproject writes for a user (images, models, reports, results, caches) goes through `atomic_path`: the
data goes to a temporary name in the same folder and is renamed over the target only when complete, so a reader
(or a run killed half-way) sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on a clean exit it replaces `path`, on an error it is removed.

    The parent folder is created. The temporary name starts with '.' and ends with '.tmp' (so folder scans that skip
    hidden files never see it) and is unique per call, so concurrent writers do not collide.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        # Some writers (safetensors, tempfile) create private 0600 files; what we write for a user is as readable
        # as any file they create themselves.
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, path)  # a rename within one folder: atomic on POSIX and Windows
    finally:
        tmp.unlink(missing_ok=True)


def _default_file_mode() -> int:
    """0666 less the process's umask: the mode open() gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> Path:
    """Write `data` to `path` atomically; with `fsync` the bytes reach the disk before the rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | Path, text: str, *, fsync: bool = False) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), fsync=fsync)


def write_json_atomic(path: str | Path, obj: Any, *, fsync: bool = False) -> Path:
    """Indented UTF-8 JSON with a final newline."""
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", fsync=fsync)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (models can be gigabytes). Raises OSError when unreadable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
