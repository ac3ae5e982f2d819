"""Tensors from .safetensors (read without the package), .npz and PyTorch files."""

import struct

import numpy as np
import pytest

from keras_astpe.conversion.state_dicts import read_safetensors, read_state_dict
from tests.conversion.ast_reference import write_safetensors

pytestmark = pytest.mark.backend_agnostic


def test_safetensors_by_hand_including_bfloat16(tmp_path):
    weight = np.random.randn(3, 4).astype("float32")
    bf16 = (weight.view(np.uint32) >> 16).astype("<u2")  # truncated to bfloat16
    write_safetensors(tmp_path / "m.safetensors", {
        "w": ("F32", weight), "h": ("F16", weight.astype("float16")), "b": ("BF16", bf16),
        "i": ("I64", np.arange(5))})
    tensors = read_state_dict(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(tensors["w"], weight)
    np.testing.assert_array_equal(tensors["h"], weight.astype("float16").astype("float32"))
    np.testing.assert_allclose(tensors["b"], weight, rtol=1e-2)
    assert tensors["b"].dtype == np.float32 and tensors["i"].tolist() == [0, 1, 2, 3, 4]


def test_safetensors_as_the_package_writes_them(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = {"a": np.random.randn(2, 3).astype("float32"), "b": np.arange(4, dtype="int32")}
    safetensors_numpy.save_file(arrays, str(tmp_path / "m.safetensors"))
    tensors = read_safetensors(tmp_path / "m.safetensors")
    for name, array in arrays.items():
        np.testing.assert_array_equal(tensors[name], array)


def test_npz_and_torch_files(tmp_path):
    arrays = {"cls_token": np.random.randn(1, 1, 4).astype("float32")}
    np.savez(tmp_path / "m.npz", **arrays)
    np.testing.assert_array_equal(read_state_dict(tmp_path / "m.npz")["cls_token"],
                                  arrays["cls_token"])
    torch = pytest.importorskip("torch")
    torch.save({"model": {"cls_token": torch.tensor(arrays["cls_token"])}}, tmp_path / "d.pth")
    np.testing.assert_array_equal(read_state_dict(tmp_path / "d.pth")["cls_token"],
                                  arrays["cls_token"])


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth: checkpoint file not found"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "m.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match="m.ckpt: unknown checkpoint format"):
        read_state_dict(tmp_path / "m.ckpt")
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", 3) + b"abc")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_state_dict(tmp_path / "m.safetensors")
    pytest.importorskip("torch")
    (tmp_path / "m.pth").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="m.pth: not a PyTorch state dict"):
        read_state_dict(tmp_path / "m.pth")
