#!/usr/bin/python3
"""The `sieve` command's surface: --help everywhere, and every failure reported as
`sieve: error: ...` on stderr with exit status 1 (never a crash, an abort or a traceback).

Usage: cli_test.py SIEVE_EXE   (needs numpy only; fast: no model is run)
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError as e:  # meson treats 77 as "skipped"
    print(f"SKIP: {e} (install python3-numpy)")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import safetensors_py as stp  # noqa: E402

failures = []


def run(exe, args):
    r = subprocess.run([exe] + args, capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


def expect_ok(exe, args, *texts):
    rc, out, err = run(exe, args)
    if rc != 0 or not all(t in out for t in texts):
        failures.append(f"sieve {' '.join(args)}: rc={rc}, wanted {texts} in stdout\nstdout: {out}\nstderr: {err}")


def expect_error(exe, args, *texts, rc_wanted=1):
    """A failure: exit 1 while running, 2 for a usage error; one 'sieve: error:' line."""
    rc, out, err = run(exe, args)
    first = err.strip().splitlines()[0] if err.strip() else ""
    if rc != rc_wanted or not first.startswith("sieve: error: ") or not all(t in err for t in texts):
        failures.append(f"sieve {' '.join(args)}: rc={rc} (wanted {rc_wanted}), wanted 'sieve: error:' and {texts}"
                        f"\nstderr: {err}")


def main(exe):
    expect_ok(exe, ["--help"], "Usage: sieve", "forward")
    expect_ok(exe, ["forward", "--help"], "--weights", "--input", "--out", "--target", "--train", "--double")
    expect_ok(exe, ["--version"], "sieve 0.1.0", "instruction sets compiled in:", "MPI: ", "compiler: ")
    expect_ok(exe, ["inspect", "--help"], "--values")
    good = os.path.join(ROOT, "tests/data/safetensors/good/torch_all_dtypes.safetensors")
    expect_ok(exe, ["inspect", good, "--values", "3"], "__metadata__ producer = torch", "f16 F16 [2, 13] [",
              "i64 I64 [2, 4] [", ": 0 1 -1", "bn.num_batches_tracked I64 [] [", ": 7", "7 tensors", "valid")
    expect_error(exe, ["inspect", os.path.join(ROOT, "tests/data/safetensors/bad/gap.safetensors")],
                 "gap.safetensors", "(gap) [rule: offsets contiguous from 0, no gaps or overlaps]")
    expect_error(exe, ["inspect"], "file is required", rc_wanted=2)
    expect_error(exe, [], "subcommand", rc_wanted=2)
    expect_error(exe, ["bogus"], "unknown subcommand 'bogus'", rc_wanted=2)
    expect_error(exe, ["forward"], "--weights is required", rc_wanted=2)
    expect_error(exe, ["forward", "--weights", "a", "--input", "b", "--out", "c", "--no-such-flag"], "--no-such-flag",
                 rc_wanted=2)
    expect_error(exe, ["forward", "--weights", "a", "--input", "b", "--out", "c", "--threads", "-2"], "--threads",
                 "not in range 0 to 4096", rc_wanted=2)
    # Another kind of file is called so (here a PNG), not read as a header length.
    expect_error(exe, ["inspect", os.path.join(ROOT, "tests/data/images/brightness_0.6_in_37x53.png")], "not a safetensors file?",
                 "\\x89PNG")
    with tempfile.TemporaryDirectory(prefix="sieve-cli-test-") as d:
        p = lambda n: os.path.join(d, n)  # noqa: E731
        expect_error(exe, ["forward", "--weights", p("missing.safetensors"), "--input", "x", "--out", "y"],
                     "missing.safetensors: cannot open")
        bad = os.path.join(ROOT, "tests/data/safetensors/bad/overlap.safetensors")
        expect_error(exe, ["forward", "--weights", bad, "--input", "x", "--out", "y"],
                     "overlap.safetensors", "[rule: offsets contiguous from 0, no gaps or overlaps]")
        stp.save({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, p("nofc.safetensors"))
        expect_error(exe, ["forward", "--weights", p("nofc.safetensors"), "--input", "x", "--out", "y"],
                     "nofc.safetensors: no tensor 'fc.weight'")
        stp.save({"fc.weight": np.zeros((3, 512), np.float32)}, p("fc512.safetensors"))
        expect_error(exe, ["forward", "--weights", p("fc512.safetensors"), "--input", "x", "--out", "y"],
                     "fc.weight has shape [3, 512], expected [K, 2048]")
        # A head alone: every backbone tensor is reported missing, by name, in one message.
        stp.save({"fc.weight": np.zeros((3, 2048), np.float32), "fc.bias": np.zeros(3, np.float32),
                  "extra": np.zeros(1, np.float32)}, p("head.safetensors"))
        expect_error(exe, ["forward", "--weights", p("head.safetensors"), "--input", "x", "--out", "y"],
                     "load_state_dict:", "missing [conv1.weight, bn1.weight", "1 unexpected [extra]")
    if failures:
        print("FAILURES:\n" + "\n\n".join(failures), file=sys.stderr)
        return 1
    print("OK: sieve --help / errors behave")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
