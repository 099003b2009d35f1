#!/usr/bin/python3
"""`sieve` under mpirun (built with -Dmpi=enabled), on a tiny generated data folder:

1. equivalence: `mpirun -np 2 sieve train --batch 8` (4 images per rank) and a single process
   with --batch 8 take the same optimizer steps: with the backbone frozen (BN never in training
   mode) and dropout 0 the final and best weights agree to 1e-5 (relative), metrics.jsonl has one
   line per epoch with the same loss (the global batch's) and validation, and the split and
   config are the same. A control run with --batch 4 on 2 ranks must differ, so the comparison
   can fail. With dropout, a 2-rank run stopped by --max-steps and resumed under mpirun equals
   the uninterrupted 2-rank run bit for bit. The image path (crop-flip augmentation, per-rank
   shards, sharded validation) runs on 2 ranks for a few steps and resumes under mpirun to the
   step count one process reaches.
2. `mpirun -np 2 sieve predict` writes the same submission.csv as one process, and the same
   test scores / embeddings (1e-5);
3. `mpirun -np 3 sieve embed` (uneven shards) gives the same ids and embeddings (1e-5);
4. failures end the job non-zero within seconds with a clear message: one rank given a data
   folder that does not exist; --batch not a multiple of the ranks; --max-minutes; a subcommand
   that does not run under MPI.

Usage: test_mpi.py SIEVE_EXE SOURCE_ROOT MPIRUN     exit 0 = pass, 77 = skipped, else fail
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

EXE, ROOT, MPIRUN = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import numpy as np
    import safetensors_py as stp  # noqa: E402
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cli_util import CLASSES, draw_shape  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1",
           OMPI_MCA_btl="self,vader,tcp", OMPI_MCA_rmaps_base_oversubscribe="1", SIEVE_MPI_TIMEOUT="60",
           OMP_NUM_THREADS="1")  # one compute thread per process: results compared at one thread count
failures = []
tmp = tempfile.mkdtemp(prefix="sieve_mpi_")
rng = np.random.default_rng(3)


def check(cond, what, detail=""):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
        if detail:
            print(detail[-3000:])
    return cond


def single(*args, timeout=300):
    t0 = time.monotonic()
    r = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def mpi(n, *args, timeout=300, mpmd=None):
    """mpirun -np n sieve args; mpmd: extra (n, args) groups after ':' (different argv per rank)."""
    cmd = [MPIRUN, "--oversubscribe", "--bind-to", "none", "-np", str(n), EXE, *map(str, args)]
    for k, a in mpmd or []:
        cmd += [":", "-np", str(k), EXE, *map(str, a)]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def draw(kind):
    return draw_shape(kind, rng)


data = os.path.join(tmp, "data")
for sub in ("train", "test", "outside"):
    os.makedirs(os.path.join(data, sub))
rows = []
for c in range(3):
    for i in range(15):
        draw(c).save(os.path.join(data, "train", f"t{c}_{i}.png"))
        rows.append(f"t{c}_{i},{CLASSES[c]}")
for i in range(10):
    draw(3).save(os.path.join(data, "outside", f"o{i}.png"))
test_ids = [f"q{i:03d}" for i in range(23)]  # odd: the 2 shards differ in size
for i, t in enumerate(test_ids):
    draw(i % 4).save(os.path.join(data, "test", t + ".png"))
with open(os.path.join(data, "train.csv"), "w") as f:
    f.write("id,label\n" + "\n".join(rows) + "\n")
order = list(test_ids)
rng.shuffle(order)
with open(os.path.join(data, "sample_submission.csv"), "w") as f:
    f.write("id,predictions\n" + "".join(f"{i},-1\n" for i in order))

TINY = ["--data", data, "--recipe", "seed", "--arch", "tiny", "--image-size", "32", "--fit", "pad", "--workers", "1", "--threads", "1",
        "--quiet", "--seed", "5"]
# Head-only training on cached embeddings: BN never trains, so ranks and one process agree.
EXACT = TINY + ["--freeze", "backbone", "--augment", "none", "--dropout", "0", "--epochs", "3"]


def weights(run, slot):
    t, _ = stp.load_numpy(os.path.join(run, slot, "model.safetensors"))
    return t


def worst_rel(a, b):
    """max over tensors of max|a-b| / max(|a|, 1e-12), and the tensor's name."""
    worst, name = 0.0, ""
    for k in a:
        d = float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) / max(float(np.max(np.abs(a[k]))), 1e-12)
        if d > worst:
            worst, name = d, k
    return worst, name


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def state(run, slot="last"):
    return json.load(open(os.path.join(run, slot, "state.json")))


# --- 1. equivalence -------------------------------------------------------------------------
one, two, ctl = (os.path.join(tmp, n) for n in ("run1", "run2", "run_ctl"))
rc, out, secs = single("train", *EXACT, "--batch", "8", "--out", one)
if not check(rc == 0, f"1 process train (batch 8) [{secs:.1f} s]", out):
    print(f"{len(failures)} failed")
    sys.exit(1)
rc, out, secs = mpi(2, "train", *EXACT, "--batch", "8", "--out", two)
if not check(rc == 0, f"2 ranks train (global batch 8, 4 per rank) [{secs:.1f} s]", out):
    print(f"{len(failures)} failed")
    sys.exit(1)
for slot in ("last", "best"):
    a, b = weights(one, slot), weights(two, slot)
    check(sorted(a) == sorted(b), f"{slot}/: same tensor names")
    w, name = worst_rel(a, b)
    check(w < 1e-5, f"{slot}/: 2x4 weights equal 1x8 to {w:.2e} (worst {name})")
    frozen = [k for k in a if not k.startswith("fc.")]
    check(frozen and all(np.array_equal(a[k], b[k]) for k in frozen), f"{slot}/: frozen backbone bit-identical")
check(state(one)["step"] == state(two)["step"] > 0, f"same optimizer steps ({state(one)['step']}, {state(two)['step']})")
m1, m2 = metrics(one), metrics(two)
check(len(m1) == len(m2) == 3, f"metrics.jsonl: one line per epoch, written once ({len(m1)}, {len(m2)})")
check(all(abs(x["loss"] - y["loss"]) < 1e-5 * max(1.0, abs(x["loss"])) for x, y in zip(m1, m2)),
      "metrics.jsonl: the logged loss is the global batch's", f"{m1}\n{m2}")
check(all(x["val_map5"] == y["val_map5"] and x["step"] == y["step"] for x, y in zip(m1, m2)),
      "metrics.jsonl: same steps and validation MAP@5")
for f in ("config.json", "split.json"):
    check(json.load(open(os.path.join(one, f))) == json.load(open(os.path.join(two, f))), f"{f} identical")
c1, c2 = json.load(open(os.path.join(one, "calibration.json"))), json.load(open(os.path.join(two, "calibration.json")))
check(c1["recommended"] == c2["recommended"] and c1["n_val"] == c2["n_val"], "calibration.json: same decisions")
check(all(abs(c1["methods"][k]["val_map5"] - c2["methods"][k]["val_map5"]) < 1e-9 for k in c1["methods"]),
      "calibration.json: same validation MAP@5 per method")
rc, out, secs = mpi(2, "train", *EXACT, "--batch", "4", "--out", ctl)
check(rc == 0, "control: 2 ranks with global batch 4", out)
if rc == 0:
    w, _ = worst_rel(weights(one, "last"), weights(ctl, "last"))
    check(w > 1e-3, f"control: global batch 4 differs from batch 8 ({w:.2e}), so the comparison can fail")

# Resume under mpirun is exact: a 2-rank run (dropout on: per-rank streams keyed by step)
# stopped by --max-steps and resumed equals the uninterrupted 2-rank run bit for bit.
DROP = TINY + ["--freeze", "backbone", "--augment", "none", "--dropout", "0.3", "--epochs", "3", "--batch", "8"]
full, part = os.path.join(tmp, "run_full"), os.path.join(tmp, "run_part")
rc, out, _ = mpi(2, "train", *DROP, "--out", full)
check(rc == 0, "2 ranks, dropout 0.3, uninterrupted", out)
rc2, out2, _ = mpi(2, "train", *DROP, "--max-steps", "7", "--out", part)
check(rc2 == 0 and state(part)["step"] == 7, "2 ranks, dropout 0.3, stopped at step 7", out2)
rc3, out3, _ = mpi(2, "train", "--resume", part, "--threads", "1", "--workers", "1", "--quiet")
check(rc3 == 0, "2 ranks: resume", out3)
if rc == rc2 == rc3 == 0:
    a, b = weights(full, "last"), weights(part, "last")
    same = all(np.array_equal(a[k], b[k]) for k in a)
    check(same and state(full)["step"] == state(part)["step"], "2 ranks: stop + resume is bit-identical to the "
          f"uninterrupted run ({worst_rel(a, b)[0]:.2e})")
    w, _ = worst_rel(weights(one, "last"), a)
    check(w > 1e-4, f"dropout 0.3 changes the weights ({w:.2e}): the resume check sees dropout")

# The image path: sharded loader + augmentation + sharded validation, a step limit, then resume.
img = os.path.join(tmp, "run_img")
IMG = TINY + ["--epochs", "2", "--batch", "6", "--blocks", "1,1", "--width", "8"]
rc, out, secs = mpi(2, "train", *IMG, "--max-steps", "3", "--out", img)
check(rc == 0, f"image path on 2 ranks, --max-steps 3 [{secs:.1f} s]", out)
if rc == 0:
    check(state(img)["step"] == 3, f"image path: stopped at step 3 ({state(img)['step']})")
    rc, out, secs = mpi(2, "train", "--resume", img, "--threads", "1", "--workers", "1", "--quiet")
    check(rc == 0, f"image path: resume on 2 ranks [{secs:.1f} s]", out)
    ref = os.path.join(tmp, "run_img_ref")
    rc1, out1, _ = single("train", *IMG, "--out", ref)
    if rc == 0 and rc1 == 0:
        check(state(img)["step"] == state(ref)["step"], f"image path: as many steps as one process "
              f"({state(img)['step']}, {state(ref)['step']})")
        check(len(metrics(img)) == 2, f"image path: 2 epochs logged once ({len(metrics(img))})")
        for f in ("calibration.json", "train_embeddings.safetensors", "best/model.safetensors"):
            check(os.path.exists(os.path.join(img, f)), f"image path: {f} written")

# --- 2. predict -------------------------------------------------------------------------------
sub1, sub2 = os.path.join(tmp, "sub1.csv"), os.path.join(tmp, "sub2.csv")
PRED = ["predict", "--run", one, "--data", data, "--method", "fusion", "--tta", "flip", "--workers", "1", "--threads",
        "1", "--quiet"]
rc, out, _ = single(*PRED, "--out", sub1)
check(rc == 0, "1 process predict", out)
s1, _ = stp.load_numpy(os.path.join(tmp, "sub1.scores.safetensors"))
e1, meta1 = stp.load_numpy(os.path.join(tmp, "sub1.embeddings.safetensors"))
rc, out, secs = mpi(2, *PRED, "--out", sub2)
check(rc == 0, f"2 ranks predict [{secs:.1f} s]", out)
if rc == 0:
    check(out.count("rows written") == 1, "predict: only rank 0 prints the summary", out)
    check(open(sub1).read() == open(sub2).read(), "predict: the same submission.csv")
    s2, _ = stp.load_numpy(os.path.join(tmp, "sub2.scores.safetensors"))
    e2, meta2 = stp.load_numpy(os.path.join(tmp, "sub2.embeddings.safetensors"))
    check(meta1["ids"] == meta2["ids"] and len(json.loads(meta2["ids"])) == len(test_ids), "predict: same test ids")
    check(np.max(np.abs(s1["scores"] - s2["scores"])) < 1e-5, "predict: same scores (1e-5)")
    check(np.max(np.abs(e1["embedding"] - e2["embedding"])) < 1e-5, "predict: same embeddings (1e-5)")

# --- 3. embed ---------------------------------------------------------------------------------
emb1, emb3 = os.path.join(tmp, "e1.safetensors"), os.path.join(tmp, "e3.safetensors")
EMB = ["embed", "--run", one, "--images", os.path.join(data, "test"), "--workers", "1", "--quiet"]
rc, out, _ = single(*EMB, "--out", emb1)
check(rc == 0, "1 process embed", out)
rc, out, secs = mpi(3, *EMB, "--out", emb3)
check(rc == 0, f"3 ranks embed (shards of 7, 8, 8) [{secs:.1f} s]", out)
if rc == 0:
    a, ma = stp.load_numpy(emb1)
    b, mb = stp.load_numpy(emb3)
    check(json.loads(ma["ids"]) == json.loads(mb["ids"]) == sorted(test_ids), "embed: same ids, in order")
    check(a["embedding"].shape == b["embedding"].shape and np.max(np.abs(a["embedding"] - b["embedding"])) < 1e-5,
          "embed: same embeddings (1e-5)")

# --- 4. failures ------------------------------------------------------------------------------
bad = os.path.join(tmp, "run_bad")
missing = os.path.join(tmp, "no_such_data")
args = ["train", *EXACT, "--batch", "8", "--out", bad]
rc, out, secs = mpi(1, *args, mpmd=[(1, [a if a != data else missing for a in args])], timeout=120)
check(rc != 0 and secs < 30, f"one rank with a missing data folder: the job fails (exit {rc}) in {secs:.1f} s", out)
check("rank 1 of 2: error:" in out and "no_such_data" in out, "... the failing rank names itself and the folder", out)
check(not os.path.exists(os.path.join(bad, "config.json")), "... and rank 0 wrote nothing")
rc, out, secs = mpi(2, "train", *EXACT, "--batch", "7", "--out", bad)
check(rc != 0 and "--batch 7 is the global batch under MPI and must be a multiple of the 2 ranks" in out,
      f"--batch 7 on 2 ranks is refused (exit {rc}, {secs:.1f} s)", out)
rc, out, secs = mpi(2, "train", *EXACT, "--batch", "8", "--max-minutes", "1", "--out", bad)
check(rc != 0 and "--max-minutes cannot be used with 2 MPI ranks" in out, f"--max-minutes on 2 ranks is refused "
      f"(exit {rc}, {secs:.1f} s)", out)
rc, out, secs = mpi(2, "validate", "--data", data)
check(rc != 0 and "'sieve validate' does not run under MPI" in out, f"validate under mpirun is refused (exit {rc})", out)
# One rank is still fine and the same as no mpirun (a single-rank job uses the plain path).
rc, out, secs = mpi(1, "train", *EXACT, "--batch", "8", "--out", os.path.join(tmp, "run_np1"))
check(rc == 0, "mpirun -np 1 train", out)
if rc == 0:
    a, b = weights(one, "last"), weights(os.path.join(tmp, "run_np1"), "last")
    check(all(np.array_equal(a[k], b[k]) for k in a), "mpirun -np 1: bit-identical to no mpirun")

shutil.rmtree(tmp, ignore_errors=True)
print(f"{len(failures)} failed")
sys.exit(1 if failures else 0)
