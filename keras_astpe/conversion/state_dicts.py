"""Tensors by name from the checkpoint files of PyTorch models, as float32 numpy arrays.

`.safetensors` is read here (an 8-byte header size, a JSON header, raw little-endian
data), so that no extra package is needed; `.bin`, `.pth` and `.pt` are PyTorch pickles and
need `torch` (read with `weights_only=True`: tensors only, no code runs); `.npz` is a numpy
archive of the same names.
"""

import json
import os
import struct

import numpy as np

_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
TORCH_SUFFIXES = (".bin", ".pth", ".pt")
SUFFIXES = (".safetensors", ".npz", *TORCH_SUFFIXES)


def read_safetensors(path):
    """`{name: array}` of a `.safetensors` file (bfloat16 widened to float32)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (header_size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_size])
    except (ValueError, UnicodeDecodeError):
        raise ValueError(f"{path}: not a safetensors file (no JSON header)") from None
    body = memoryview(data)[8 + header_size:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        raw = body[start:end]
        if entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif entry["dtype"] in _SAFETENSORS_DTYPES:
            array = np.frombuffer(raw, np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
                                  .newbyteorder("<"))
        else:
            raise ValueError(f"{path}: tensor {name} has the unsupported dtype "
                             f"{entry['dtype']}")
        tensors[name] = array.reshape(entry["shape"])
    return tensors


def read_torch(path):
    """`{name: array}` of a PyTorch state dict saved with `torch.save` (tensors only)."""
    try:
        import torch
    except ImportError:
        raise ImportError(f"{path}: reading a PyTorch checkpoint needs torch (pip install "
                          "torch, a CPU build is enough), or convert it to .safetensors"
                          ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for a file that is not its own
        raise ValueError(f"{path}: not a PyTorch state dict ({error})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # DeiT's official files: {"model": state_dict, ...}
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got "
                         f"{type(state).__name__}")
    return {name: value.detach().float().numpy() if value.is_floating_point()
            else value.detach().numpy()
            for name, value in state.items() if isinstance(value, torch.Tensor)}


def read_state_dict(path):
    """`{name: float32 array}` of a checkpoint file, by its suffix (`SUFFIXES`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    if path.endswith(".safetensors"):
        tensors = read_safetensors(path)
    elif path.endswith(TORCH_SUFFIXES):
        tensors = read_torch(path)
    elif path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            tensors = dict(archive)
    else:
        raise ValueError(f"{path}: unknown checkpoint format; expected one of {SUFFIXES}")
    return {name: np.asarray(value, np.float32) if np.issubdtype(value.dtype, np.floating)
            else value for name, value in tensors.items()}
