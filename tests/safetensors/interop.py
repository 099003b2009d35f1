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
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
