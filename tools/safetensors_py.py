#!/usr/bin/python3
"""Small pure-Python (numpy) safetensors reader and writer.

Debian bookworm ships no python3-safetensors, so sieve's tests and fixture scripts use this
module to move tensors between PyTorch and sieve. It implements the format as sieve's
include/sieve/io/safetensors.hpp does: 8-byte little-endian header length, UTF-8 JSON header,
contiguous data buffer. Dtypes: F16, BF16, F32, F64, I64 (plus I32/U8/BOOL on the torch side
for convenience when writing; sieve itself rejects those).

Usage as a library (run with /usr/bin/python3, which has torch):
    import safetensors_py as stp
    stp.save_torch({"w": torch.randn(3, 4)}, "x.safetensors", metadata={"k": "v"})
    tensors = stp.load_torch("x.safetensors")          # dict name -> torch.Tensor
    arrays, meta = stp.load_numpy("x.safetensors")     # BF16 comes back as float32
Usage as a program:
    /usr/bin/python3 tools/safetensors_py.py dump FILE  # names, dtypes, shapes, metadata
"""

import json
import struct
import sys

import numpy as np

MAX_HEADER = 100_000_000

_NP = {
    "F16": np.dtype("<f2"),
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # raw bits; widened to float32 on load
}
_SIZE = {k: v.itemsize for k, v in _NP.items()}


class SafetensorsError(ValueError):
    pass


def _read_header(data, name):
    if len(data) < 8:
        raise SafetensorsError(f"{name}: file too short for the header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise SafetensorsError(f"{name}: header length {n} over the 100 MB limit")
    if 8 + n > len(data):
        raise SafetensorsError(f"{name}: header length {n} runs past the end of the file")
    raw = data[8:8 + n]
    if not raw.startswith(b"{"):
        raise SafetensorsError(f"{name}: header does not start with '{{'")

    def no_dups(pairs):
        d = {}
        for k, v in pairs:
            if k in d:
                raise SafetensorsError(f"{name}: duplicate key {k!r}")
            d[k] = v
        return d

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_dups)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{name}: header is not UTF-8 JSON: {e}") from None
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsError(f"{name}: __metadata__ must map strings to strings")
    for tname, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise SafetensorsError(f"{name}: tensor {tname!r}: entry must hold exactly dtype, shape, data_offsets")
        offs, shape = e["data_offsets"], e["shape"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int and o >= 0 for o in offs)
                and isinstance(shape, list) and all(type(s) is int and s >= 0 for s in shape)):
            raise SafetensorsError(f"{name}: tensor {tname!r}: bad shape or data_offsets")
    entries = sorted(header.items(), key=lambda kv: tuple(kv[1]["data_offsets"]))
    expect = 0
    for tname, e in entries:
        if e["dtype"] not in _SIZE:
            raise SafetensorsError(f"{name}: tensor {tname!r}: unsupported dtype {e['dtype']}")
        b, t = e["data_offsets"]
        if b != expect:
            raise SafetensorsError(f"{name}: tensor {tname!r}: offsets not contiguous")
        if t - b != int(np.prod(e["shape"], dtype=np.int64)) * _SIZE[e["dtype"]]:
            raise SafetensorsError(f"{name}: tensor {tname!r}: byte length does not match shape")
        expect = t
    if 8 + n + expect != len(data):
        raise SafetensorsError(f"{name}: last tensor does not end at end of file")
    return 8 + n, entries, meta


def _decode(buf, e):
    return np.frombuffer(buf, dtype=_NP[e["dtype"]]).reshape(e["shape"])


def load_raw(path):
    """Return ([(name, dtype, shape, numpy array of the stored bits/values)], metadata), file order."""
    with open(path, "rb") as f:
        data = f.read()
    start, entries, meta = _read_header(data, str(path))
    out = []
    for tname, e in entries:
        b, t = e["data_offsets"]
        out.append((tname, e["dtype"], list(e["shape"]), _decode(data[start + b:start + t], e).copy()))
    return out, meta


def load_numpy(path):
    """Return ({name: numpy array}, metadata). BF16 is widened exactly to float32."""
    raw, meta = load_raw(path)
    out = {}
    for tname, dtype, _shape, arr in raw:
        if dtype == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[tname] = arr
    return out, meta


def load_torch(path, with_metadata=False):
    """Return {name: torch.Tensor} with the stored dtypes (BF16 stays torch.bfloat16)."""
    import torch
    raw, meta = load_raw(path)
    out = {}
    for tname, dtype, shape, arr in raw:
        if dtype == "BF16":
            t = torch.from_numpy(arr.astype(np.int16, copy=False).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr))
        out[tname] = t.reshape(shape)
    return (out, meta) if with_metadata else out


def _torch_to_entry(t):
    import torch
    t = t.detach().cpu().contiguous()
    names = {
        torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
        torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL",
    }
    if t.dtype not in names:
        raise SafetensorsError(f"unsupported torch dtype {t.dtype}")
    if t.dtype == torch.bfloat16:
        buf = t.view(torch.int16).numpy().astype("<i2").tobytes()
    else:
        buf = t.numpy().astype(_NP[names[t.dtype]], copy=False).tobytes()
    return names[t.dtype], list(t.shape), buf


def _numpy_to_entry(a):
    a = np.ascontiguousarray(a)
    for k in ("F16", "F32", "F64", "I64", "I32", "U8", "BOOL"):
        v = _NP[k]
        if a.dtype.kind == v.kind and a.dtype.itemsize == v.itemsize:
            return k, list(a.shape), a.astype(v, copy=False).tobytes()
    raise SafetensorsError(f"unsupported numpy dtype {a.dtype}")


def save(tensors, path, metadata=None):
    """Write {name: torch.Tensor or numpy array} in dict order (torch state_dict order)."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    bufs = []
    offset = 0
    for tname, t in tensors.items():
        if isinstance(t, np.ndarray):
            dtype, shape, buf = _numpy_to_entry(t)
        else:
            dtype, shape, buf = _torch_to_entry(t)
        header[tname] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(buf)]}
        offset += len(buf)
        bufs.append(buf)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in bufs:
            f.write(b)


save_torch = save


def main(argv):
    if len(argv) == 3 and argv[1] == "dump":
        raw, meta = load_raw(argv[2])
        for k, v in sorted(meta.items()):
            print(f"__metadata__ {k} = {v}")
        for tname, dtype, shape, _arr in raw:
            print(f"{tname} {dtype} {shape}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
