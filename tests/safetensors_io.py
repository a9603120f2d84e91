"""A tiny, dependency-free safetensors reader and writer for torch tensors (struct + json + torch).

The engine's parity scripts use it to hand PyTorch tensors to the C++ tests (there is no Debian
package of the `safetensors` Python library). The format, as in nn/safetensors.h:

    8 bytes    N, the header length, unsigned little-endian
    N bytes    JSON: {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
                      "__metadata__": {"key": "value", ...}}   (padded with spaces to a multiple of 8)
    the rest   the raw little-endian bytes of every tensor, row-major; offsets are relative to the
               first byte after the header, and the byte ranges tile the data without gaps.

    write(path, {"name": tensor, ...}, metadata={"key": "value"})
    tensors, metadata = read(path)

Supported dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. Tensors may have any strides and live on
any device (they are copied to contiguous CPU memory). Writes are atomic (temporary file in the same
folder, fsync, rename). Run this file directly to execute its self-test.
"""

import json
import os
import struct
import sys
import tempfile

import torch

__all__ = ["write", "read", "DTYPES"]

# safetensors dtype name <-> torch dtype
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # as the reference implementation: refuse absurd header lengths


def _to_bytes(t):
    """Raw little-endian row-major bytes of a tensor (any strides, any device)."""
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    # Reinterpret as bytes without numpy (numpy has no bfloat16): a flat uint8 view of the storage.
    b = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    if sys.byteorder != "little" and t.element_size() > 1:
        b = _byteswap(b, t.element_size())
    return b


def _byteswap(b, size):
    return b"".join(b[i:i + size][::-1] for i in range(0, len(b), size))


def write(path, tensors, metadata=None):
    """Writes `tensors` (a dict, or a list of (name, tensor) pairs, kept in that order) to `path`.

    metadata: an optional dict of str -> str stored under "__metadata__".
    """
    items = list(tensors.items()) if isinstance(tensors, dict) else list(tensors)
    header = {}
    chunks = []
    offset = 0
    for name, t in items:
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"{path}: invalid tensor name {name!r}")
        if name in header:
            raise ValueError(f"{path}: duplicate tensor name {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{path}: {name!r} is a {type(t).__name__}, not a torch.Tensor")
        if t.dtype not in _NAMES:
            raise TypeError(f"{path}: {name!r} has unsupported dtype {t.dtype}")
        b = _to_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        chunks.append(b)
        offset += len(b)
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"{path}: metadata must map str to str, got {k!r}: {v!r}")
        header["__metadata__"] = dict(metadata)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)  # the data starts 8-byte aligned

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(h)))
            f.write(h)
            for b in chunks:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read(path):
    """Reads a safetensors file: returns (dict name -> torch.Tensor in data-offset order, metadata dict).

    Checks the header length, the JSON, dtypes, that each byte range matches its shape and that the
    ranges tile the data exactly; raises ValueError naming the file (and the tensor) otherwise.
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: file of {len(data)} bytes is too short for a safetensors header")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} does not fit in a file of {len(data)} bytes")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    body = data[8 + n:]

    entries = []
    for name, e in header.items():
        try:
            dtype = DTYPES[e["dtype"]]
            shape = [int(s) for s in e["shape"]]
            begin, end = (int(o) for o in e["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r}: bad entry {e!r}") from None
        if any(s < 0 for s in shape):
            raise ValueError(f"{path}: tensor {name!r}: negative size in shape {shape}")
        numel = 1
        for s in shape:
            numel *= s
        size = torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= len(body) or end - begin != numel * size:
            raise ValueError(f"{path}: tensor {name!r}: data_offsets [{begin}, {end}] do not hold "
                             f"{e['dtype']} {shape} ({numel * size} bytes) within {len(body)} data bytes")
        entries.append((begin, end, name, dtype, shape))
    entries.sort()
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            raise ValueError(f"{path}: tensor {name!r} starts at {begin}, expected {pos} (gap or overlap)")
        pos = end
    if pos != len(body):
        raise ValueError(f"{path}: {len(body) - pos} bytes after the last tensor")

    tensors = {}
    for begin, end, name, dtype, shape in entries:
        if begin == end:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        raw = body[begin:end]
        if sys.byteorder != "little":
            raw = _byteswap(raw, torch.empty((), dtype=dtype).element_size())
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype)
        tensors[name] = t.reshape(shape)
    return tensors, dict(metadata)


def _self_test():
    g = torch.Generator().manual_seed(0)
    want = {
        "a": torch.randn(3, 5, generator=g).t(),  # non-contiguous
        "b": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "c": torch.arange(7, dtype=torch.int64) - 3,
        "d": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "e": torch.tensor(2.5),  # 0-d
        "f": torch.empty(0, 4),
        "g": torch.randn(3, generator=g).to(torch.bfloat16),
        "h": torch.tensor([True, False]),
    }
    path = os.path.join(tempfile.mkdtemp(), "t.safetensors")
    write(path, want, {"k": "v"})
    got, meta = read(path)
    assert meta == {"k": "v"}, meta
    assert list(got) == list(want), list(got)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and torch.equal(got[k], v), k
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    assert n % 8 == 0, n
    print("safetensors_io self-test passed")


if __name__ == "__main__":
    _self_test()
