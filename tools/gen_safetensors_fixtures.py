#!/usr/bin/python3
"""Generate sieve's committed safetensors fixtures (run with /usr/bin/python3, needs torch).

    /usr/bin/python3 tools/gen_safetensors_fixtures.py [REPO_ROOT]

Writes
  tests/data/safetensors/good/torch_all_dtypes.safetensors  every dtype, written by PyTorch's
      own conversions (float64 -> float32 -> float16/bfloat16), read back by the C++ unit test
  tests/data/safetensors/bad/*.safetensors + MANIFEST.tsv   one file per safety rule broken,
      each with the text sieve's error must contain
  tools/fuzz/corpus/safetensors/*                          fuzzing seeds (good and bad files)

The values below are duplicated in tests/safetensors/test_safetensors.cpp (kInteropValues):
keep the two lists identical.
"""

import math
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as stp  # noqa: E402

VALUES = [
    0.0, -0.0, 1.0, -2.5, 0.1, 1.0 / 3.0, 3.141592653589793, 65504.0, 65520.0, 1e5, -7e-06, 1e-08,
    1e-40, 1e-45, 3e38, 1e300, math.inf, -math.inf, math.nan,
    1.00048828125,       # 1 + 2^-11: a float16 tie
    1.00390625,          # 1 + 2^-8: a bfloat16 tie
    1.0039072036743164,  # 1 + 2^-8 + 2^-20: just above the bfloat16 tie
    -123.456, 5.9604644775390625e-08, 8.940696716308594e-08, 0.5,
]
INTS = [0, 1, -1, 2**62, -(2**63), 2**63 - 1, 123456789012345, -42]


def interop_tensors(producer):
    """The tensors both sides write and check, built with torch's conversions."""
    import torch
    d = torch.tensor(VALUES, dtype=torch.float64).reshape(2, 13)
    f = d.to(torch.float32)
    return {
        "f64": d,
        "f32": f,
        "f16": f.to(torch.float16),
        "bf16": f.to(torch.bfloat16),
        "i64": torch.tensor(INTS, dtype=torch.int64).reshape(2, 4),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }, {"producer": producer, "unicode": "caf\u00e9 \u2713"}


def same_bits(a, b):
    """Bitwise equality of two torch tensors of one dtype, any NaN equal to any NaN."""
    import torch
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        return bool(torch.equal(a, b))
    ints = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}[a.dtype]
    nan = torch.isnan(a) & torch.isnan(b)
    return bool(((a.view(ints) == b.view(ints)) | nan).all())


# ---- malformed files: (file name, header bytes or None, data size, expected text, raw override)
def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return '{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}' % (
        dtype, ",".join(str(s) for s in shape), offsets[0], offsets[1])


OK = _entry()

BAD = [
    # name, header (str or bytes), data bytes, expected substring in sieve's message
    ("header_not_object", "[" + OK + "]", 8, "[rule: header must be a JSON object starting with '{']"),
    ("header_leading_space", ' {"a":' + OK + "}", 8, "[rule: header must be a JSON object starting with '{']"),
    ("header_bad_utf8", b'{"a\xff":' + OK.encode() + b"}", 8, "[rule: header must be UTF-8]"),
    ("header_overlong_utf8", b'{"a\xc0\xaf":' + OK.encode() + b"}", 8, "[rule: header must be UTF-8]"),
    ("json_trailing_comma", '{"a":' + OK + ",}", 8, "[rule: header must be valid JSON]"),
    ("json_unterminated", '{"a":' + OK, 8, "[rule: header must be valid JSON]"),
    ("json_garbage_after", '{"a":' + OK + "}x", 8, "[rule: header must be valid JSON]"),
    ("json_control_char", '{"a\n":' + OK + "}", 8, "[rule: header must be valid JSON]"),
    ("json_lone_surrogate", '{"a\\ud800":' + OK + "}", 8, "[rule: header must be valid JSON]"),
    ("duplicate_tensor", '{"a":' + OK + ',"a":' + _entry(offsets=(8, 16)) + "}", 16, "[rule: no duplicate keys]"),
    ("duplicate_field", '{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', 8,
     "[rule: no duplicate keys]"),
    ("duplicate_metadata_key", '{"__metadata__":{"k":"1","k":"2"}}', 0, "[rule: no duplicate keys]"),
    ("missing_dtype", '{"a":{"shape":[2],"data_offsets":[0,8]}}', 8,
     "[rule: tensor entry has exactly dtype, shape, data_offsets]"),
    ("unknown_field", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}', 8,
     "[rule: tensor entry has exactly dtype, shape, data_offsets]"),
    ("entry_not_object", '{"a":[0,8]}', 8, "[rule: tensor entry must be an object]"),
    ("unsupported_dtype", '{"a":' + _entry("I32") + "}", 8, "[rule: dtype must be one of F16, BF16, F32, F64, I64]"),
    ("negative_dim", '{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8,
     "[rule: shape must be an array of non-negative integers]"),
    ("fractional_offset", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}', 8,
     "[rule: data_offsets must be an array of non-negative integers]"),
    ("offsets_three_values", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}}', 8,
     "[rule: data_offsets must be [begin, end]]"),
    ("offsets_reversed", '{"a":' + _entry(offsets=(8, 0)) + "}", 8, "[rule: data_offsets must satisfy begin <= end]"),
    ("byte_length_mismatch", '{"a":' + _entry(shape=(3,)) + "}", 8,
     "[rule: byte length must equal element count x dtype size]"),
    ("shape_overflow", '{"a":' + _entry(shape=(2**32, 2**32, 2)) + "}", 8,
     "[rule: byte length must equal element count x dtype size]"),
    ("bytes_overflow", '{"a":' + _entry("F64", shape=(2**61,)) + "}", 8,
     "[rule: byte length must equal element count x dtype size]"),
    ("first_not_at_zero", '{"a":' + _entry(offsets=(4, 12)) + "}", 12,
     "[rule: offsets contiguous from 0, no gaps or overlaps]"),
    ("gap", '{"a":' + OK + ',"b":' + _entry(offsets=(12, 20)) + "}", 20,
     "[rule: offsets contiguous from 0, no gaps or overlaps]"),
    ("overlap", '{"a":' + OK + ',"b":' + _entry(offsets=(4, 12)) + "}", 12,
     "[rule: offsets contiguous from 0, no gaps or overlaps]"),
    ("trailing_data", '{"a":' + OK + "}", 12, "[rule: last tensor ends at end of file]"),
    ("truncated_data", '{"a":' + OK + "}", 4, "[rule: last tensor ends at end of file]"),
    ("metadata_not_string", '{"__metadata__":{"k":1}}', 0, "[rule: __metadata__ must map strings to strings]"),
    ("metadata_not_object", '{"__metadata__":["k"]}', 0, "[rule: __metadata__ must map strings to strings]"),
]


def _file(header, data_size):
    h = header.encode("utf-8") if isinstance(header, str) else header
    return struct.pack("<Q", len(h)) + h + bytes(i % 251 for i in range(data_size))


def main(root):
    good = os.path.join(root, "tests/data/safetensors/good")
    bad = os.path.join(root, "tests/data/safetensors/bad")
    corpus = os.path.join(root, "tools/fuzz/corpus/safetensors")
    for d in (good, bad, corpus):
        os.makedirs(d, exist_ok=True)
    tensors, meta = interop_tensors("torch")
    stp.save(tensors, os.path.join(good, "torch_all_dtypes.safetensors"), meta)
    back = stp.load_torch(os.path.join(good, "torch_all_dtypes.safetensors"))
    assert all(same_bits(back[k], tensors[k]) for k in tensors), "python round trip failed"

    manifest = []
    for name, header, size, expect in BAD:
        path = os.path.join(bad, name + ".safetensors")
        with open(path, "wb") as f:
            f.write(_file(header, size))
        manifest.append((name + ".safetensors", expect))
    # Files whose length prefix itself is wrong.
    with open(os.path.join(bad, "too_short.safetensors"), "wb") as f:
        f.write(b"\x02\x00\x00")
    manifest.append(("too_short.safetensors", "[rule: header length]"))
    with open(os.path.join(bad, "header_too_large.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 100_000_001) + b"{}")
    manifest.append(("header_too_large.safetensors", "[rule: header length capped at 100 MB]"))
    with open(os.path.join(bad, "header_past_eof.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 64) + b'{"a":' + OK.encode() + b"}")
    manifest.append(("header_past_eof.safetensors", "[rule: header must fit in the file]"))
    with open(os.path.join(bad, "MANIFEST.tsv"), "w") as f:
        f.write("# file\ttext sieve's error must contain (generated by tools/gen_safetensors_fixtures.py)\n")
        for n, e in manifest:
            f.write(f"{n}\t{e}\n")

    # Fuzz seeds: a few valid files and a few malformed ones.
    shutil.copy(os.path.join(good, "torch_all_dtypes.safetensors"), os.path.join(corpus, "all_dtypes"))
    small = {"w": tensors["f32"][:1, :3], "n": tensors["bn.num_batches_tracked"]}
    stp.save(small, os.path.join(corpus, "small"), {"k": "v"})
    stp.save({}, os.path.join(corpus, "empty"))
    for name in ("gap", "overlap", "duplicate_tensor", "json_lone_surrogate", "shape_overflow"):
        shutil.copy(os.path.join(bad, name + ".safetensors"), os.path.join(corpus, "bad_" + name))
    print(f"wrote {len(manifest)} malformed files, 1 good file, fuzz seeds")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
