"""Atomic file writes: a file is either absent, its previous version, or complete.

Every file the library, the recipes and the converters write goes through `atomic_path`:
the content is written under a temporary name in the same folder, flushed to disk, given
the permissions the user's umask asks for (temporary files are created 0600) and renamed
over the target, so a killed process or a full disk never leaves a half-written file that
looks complete.
"""

import contextlib
import json
import os
import tempfile

import numpy as np

# Writers that choose the format by the file name (Keras, h5py) see the target's suffix.
_SUFFIXES = (".weights.h5", ".keras", ".h5", ".json", ".csv", ".txt")


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; on success it becomes `path`.

    Write the content to the yielded path by any means (`open`, `model.save`, h5py). On an
    exception the temporary file is removed and `path` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    # Keep the suffix: some writers (Keras, h5py) choose the format by the extension.
    suffix = next((part for part in _SUFFIXES if base.endswith(part)), "")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp-{base}-", suffix=suffix)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    """Writes `text` (UTF-8) to `path` atomically; returns `path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    return os.fspath(path)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path, content):
    """Writes `content` as indented JSON atomically (NaN and Inf as null); returns `path`."""
    return atomic_write_text(path, json.dumps(_jsonable(content), indent=2) + "\n")
