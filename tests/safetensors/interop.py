#!/usr/bin/python3
"""PyTorch <-> sieve safetensors interop, both directions, bit-exact.

Usage: interop.py TEST_SAFETENSORS_EXE
PyTorch writes py.safetensors (every dtype) through tools/safetensors_py.py; the C++ test reads
and checks it, then writes sieve.safetensors; this script reads that back into torch tensors
and compares them bitwise with the ones torch built itself.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy  # noqa: F401
    import torch  # noqa: F401
except ImportError as e:  # meson treats 77 as "skipped"
    print(f"SKIP: {e} (install python3-torch)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gen_safetensors_fixtures as gen  # noqa: E402
import safetensors_py as stp  # noqa: E402


def main(exe):
    with tempfile.TemporaryDirectory(prefix="sieve-st-interop-") as d:
        tensors, meta = gen.interop_tensors("python")
        stp.save(tensors, os.path.join(d, "py.safetensors"), meta)
        env = dict(os.environ, SIEVE_ST_INTEROP_DIR=d)
        r = subprocess.run([exe, "--no-skip", "--test-case=safetensors interop with live PyTorch"], env=env)
        if r.returncode != 0:
            print("FAIL: the C++ side rejected PyTorch's file", file=sys.stderr)
            return 1
        back, back_meta = stp.load_torch(os.path.join(d, "sieve.safetensors"), with_metadata=True)
        expect, expect_meta = gen.interop_tensors("sieve")
        bad = [k for k in expect if k not in back or not gen.same_bits(back[k], expect[k])]
        if list(back) != list(expect):
            print(f"FAIL: names/order {list(back)} != {list(expect)}", file=sys.stderr)
            return 1
        if bad:
            for k in bad:
                print(f"FAIL: {k}: sieve wrote {back[k]} expected {expect[k]}", file=sys.stderr)
            return 1
        if back_meta != expect_meta:
            print(f"FAIL: metadata {back_meta} != {expect_meta}", file=sys.stderr)
            return 1
        print(f"OK: {len(expect)} tensors, every dtype, bit-exact in both directions")
        return state_dict_interop(exe, d, env)


class Tiny(object):
    """Built lazily (torch import): mirrors Tiny<T> in tests/safetensors/test_state_dict.cpp."""

    @staticmethod
    def make(k):
        import torch
        m = torch.nn.Module()
        m.conv = torch.nn.Conv2d(3, 2, 1, bias=False)
        m.bn = torch.nn.BatchNorm2d(2)
        m.fc = torch.nn.Linear(2, k)
        return m


def state_dict_interop(exe, d, env):
    """torch state_dict -> sieve load; sieve save -> torch load_state_dict(strict=True)."""
    import torch
    m = Tiny.make(4)
    with torch.no_grad():
        n = 0
        for t in m.state_dict().values():
            if t.dtype == torch.int64:
                t.fill_(3)
            else:
                t.copy_(torch.arange(n, n + t.numel(), dtype=t.dtype).reshape(t.shape))
                n += t.numel()
    sd = m.state_dict()
    sd["bn.running_var"].copy_(torch.tensor([2.0, 3.0]))
    stp.save(sd, os.path.join(d, "torch_tiny.safetensors"))
    r = subprocess.run([exe, "--no-skip", "--test-case=state_dict interop with live PyTorch"], env=env)
    if r.returncode != 0:
        print("FAIL: sieve could not load torch's state_dict", file=sys.stderr)
        return 1
    back, meta = stp.load_torch(os.path.join(d, "sieve_tiny.safetensors"), with_metadata=True)
    if list(back) != list(sd):
        print(f"FAIL: sieve's order {list(back)} != torch's {list(sd)}", file=sys.stderr)
        return 1
    m2 = Tiny.make(4)
    m2.load_state_dict(back, strict=True)  # raises on any name/shape mismatch
    for k, v in m2.state_dict().items():
        want = sd[k] + 1 if v.dtype == torch.int64 else sd[k] * 2 + 1
        if not torch.equal(v, want):
            print(f"FAIL: {k}: {v} != {want}", file=sys.stderr)
            return 1
    if meta != {"producer": "sieve"}:
        print(f"FAIL: metadata {meta}", file=sys.stderr)
        return 1
    print("OK: torch state_dict -> sieve -> torch load_state_dict(strict=True), values and order")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
