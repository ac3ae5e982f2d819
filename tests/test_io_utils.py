"""Atomic writes: complete or absent, with the user's umask."""

import json
import os

import numpy as np
import pytest

from keras_astpe import io_utils

pytestmark = pytest.mark.backend_agnostic


def test_write_json_is_strict_json_with_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        path = io_utils.write_json(tmp_path / "a" / "m.json",
                                   {"x": np.float32(0.5), "n": np.int64(3),
                                    "nan": float("nan"), "arr": np.array([1.0, np.nan]),
                                    "t": (1, 2), "b": np.bool_(True)})
    finally:
        os.umask(old)
    with open(path) as f:
        assert json.load(f) == {"x": 0.5, "n": 3, "nan": None, "arr": [1.0, None],
                                "t": [1, 2], "b": True}
    assert os.listdir(tmp_path / "a") == ["m.json"]
    assert os.stat(path).st_mode & 0o777 == 0o640  # not mkstemp's 0600


def test_atomic_path_leaves_the_old_file_on_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("old")
    with pytest.raises(RuntimeError), io_utils.atomic_path(path) as tmp:
        assert tmp.endswith(".keras") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["model.keras"]
    with io_utils.atomic_path(tmp_path / "x.weights.h5") as tmp:
        assert tmp.endswith(".weights.h5")
        open(tmp, "w").close()
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "x.weights.h5"]
