"""examples/minimal (the pipeline in a page of C++ against the library alone): on a small shapes
folder, trained for a number of epochs (a result that does not depend on the machine's speed),
it writes a submission `sieve score` accepts and ranks far better than chance; with a time
budget it ends and writes a valid submission.
Usage: test_minimal.py SIEVE_EXE SOURCE_ROOT MINIMAL_EXE"""
import os, re, sys, tempfile
import numpy as np

sieve, src, minimal = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import make_shapes_folder, run_sieve  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, "data")
    order = make_shapes_folder(data, np.random.default_rng(5), n_train=60, n_outside=60, n_test_per=15)
    sub = os.path.join(tmp, "sub.csv")
    rc, out, err = run_sieve(minimal, data, sub, "--epochs", "80")
    assert rc == 0, f"sieve-minimal failed ({rc}):\n{out}\n{err}"
    steps = int(re.search(r"(\d+) steps", out).group(1))
    assert steps == 80, out  # one batch of 256 per epoch here
    with open(sub) as f:
        lines = f.read().splitlines()
    assert lines[0] == "id,predictions", lines[0]
    assert sorted(l.split(",")[0] for l in lines[1:]) == sorted(order)
    rc, out2, err2 = run_sieve(sieve, "score", "--submission", sub, "--solution", os.path.join(data, "solution.csv"))
    assert rc == 0, err2
    map5 = float(re.search(r"MAP@5\s+([0-9.]+)", out2).group(1))
    # Chance is about 0.3 (4 answers, -1 included); a trained ranking of these shapes is near 1.
    assert map5 >= 0.8, f"MAP@5 {map5}\n{out}\n{out2}"
    # A 3-second budget: the probe, at least the planner's minimum of steps, a valid submission.
    rc, out3, err3 = run_sieve(minimal, data, sub, "3")
    assert rc == 0 and int(re.search(r"(\d+) steps", out3).group(1)) >= 30, f"{out3}\n{err3}"
    rc, _, err3 = run_sieve(sieve, "score", "--submission", sub, "--solution", os.path.join(data, "solution.csv"))
    assert rc == 0, err3
    # Usage errors exit 2, a bad folder 1 with the folder named.
    assert run_sieve(minimal)[0] == 2
    assert run_sieve(minimal, data, sub, "--epochs")[0] == 2
    rc, _, err = run_sieve(minimal, os.path.join(tmp, "nope"), sub)
    assert rc == 1 and "nope" in err, err
    print(f"ok: {steps} steps, test MAP@5 {map5}")
