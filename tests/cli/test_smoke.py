#!/usr/bin/python3
"""End-to-end smoke run of the competition pipeline, as scripts/demo.sh runs it but tiny:
validate -> train (tiny ResNet, a few steps) -> predict (auto) -> score -> report, each step
through the real `sieve` executable on a generated data folder. Checks that every step
succeeds and hands the next one what it needs, that `sieve score` agrees with the reference
MAP@5 (tools/map5_reference.py) on the submission `sieve predict` wrote, and that the report
page links only files that exist. Usage: test_smoke.py SIEVE_EXE SOURCE_ROOT"""
import json
import os
import re
import shutil
import sys
import tempfile
import time

EXE, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tools"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import numpy as np
    import map5_reference as ref  # noqa: E402
    from cli_util import make_shapes_folder, run_sieve  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

failures = []
tmp = tempfile.mkdtemp(prefix="sieve_smoke_")


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)
    return cond


def step(name, *args):
    t0 = time.monotonic()
    rc, out, err = run_sieve(EXE, *args)
    ok = check(rc == 0, f"{name} exits 0 ({time.monotonic() - t0:.1f} s)")
    if not ok:
        print(f"rc={rc}\n{out[-3000:]}\n{err[-3000:]}")
        print(f"{len(failures)} failure(s); kept {tmp}")
        sys.exit(1)
    return out, err


data, run = os.path.join(tmp, "data"), os.path.join(tmp, "run")
order = make_shapes_folder(data, np.random.default_rng(3))

# CLI habits: usage errors exit 2, failures while running exit 1, both as one "sieve: error:"
# line without the library's "[check failed: ...]" suffix; `sieve help [SUBCOMMAND]`.
for args, rc_want, needle in ((), 2, "subcommand"), (("trian",), 2, "unknown subcommand 'trian'"), \
        (("train", "--bogus"), 2, "--bogus"), (("train", "--data", data), 2, "--out"), \
        (("train", "--data", data, "--out", run, "--blocks", "1,x"), 2, "--blocks"), \
        (("help", "nope"), 2, "unknown subcommand 'nope'"), \
        (("train", "--data", os.path.join(tmp, "no_such"), "--out", run), 1, "no_such"), \
        (("score", "--submission", os.path.join(tmp, "none.csv"), "--solution", os.path.join(tmp, "none.csv")), 1,
         "none.csv"):
    rc, out, err = run_sieve(EXE, *args)
    check(rc == rc_want and err.startswith("sieve: error: ") and needle in err and "[check failed" not in err,
          f"sieve {' '.join(args)}: exit {rc_want} naming {needle!r}: exit {rc}, {err!r}")
check(not os.path.exists(run), "the refused trains made no run folder")
rc, out, _ = run_sieve(EXE, "help")
check(rc == 0 and "train" in out and "predict" in out and "sieve help SUBCOMMAND" in out, f"sieve help: {rc} {out[:200]}")
rc, out, _ = run_sieve(EXE, "help", "train")
rc2, out2, _ = run_sieve(EXE, "train", "--help")
check(rc == 0 and out == out2 and "--max-minutes" in out, "sieve help train is sieve train --help")
check(all(h in out for h in ("Data and run folder:", "Model:", "Optimisation:", "Budget, checkpoints and resources:"))
      and "--data DIR" in out and "--weights FILE" in out, f"train --help groups its options: {out[:600]}")

step("validate", "validate", "--data", data)
# The default (fast) recipe with a narrow network: input settings from the images, softmax with
# "other", SGD, flip TTA calibrated and used by predict.
step("train", "train", "--data", data, "--out", run, "--arch", "cifar-resnet8", "--width", "8",
     "--epochs", "2", "--batch", "8", "--workers", "1", "--threads", "1", "--quiet")
for f in ("config.json", "metrics.jsonl", "calibration.json", "last"):  # no best/: no early stopping
    check(os.path.exists(os.path.join(run, f)), f"train wrote {f}")

sub = os.path.join(tmp, "submission.csv")
step("predict", "predict", "--run", run, "--data", data, "--out", sub, "--method", "auto", "--workers", "1",
     "--quiet")
lines = open(sub).read().splitlines()
check(lines[0] == "id,predictions", "submission header")
rows = [(l.split(",")[0], l.split(",")[1].split(" ")) for l in lines[1:]]
check([r[0] for r in rows] == order, "submission rows follow sample_submission.csv")
check(all(1 <= len(p) <= 5 and len(set(p)) == len(p) for _, p in rows), "at most 5 distinct labels per row")

score_json = os.path.join(tmp, "score.json")
out, _ = step("score", "score", "--submission", sub, "--solution", os.path.join(data, "solution.csv"),
              "--json", score_json)
truth = dict(l.split(",") for l in open(os.path.join(data, "solution.csv")).read().splitlines()[1:])
want = ref.mapk([p for _, p in rows], [truth[i] for i, _ in rows], 5)
got = json.load(open(score_json))
check(abs(got["map5"] - want) < 1e-12, f"sieve score MAP@5 {got['map5']:.6f} equals the reference {want:.6f}")
check(re.search(r"MAP@5\s+" + f"{want:.4f}", out) is not None, "the printed MAP@5 is the reference value")

step("report", "report", "--run", run, "--predict", sub, "--solution", os.path.join(data, "solution.csv"), "--umap-points", "40")
page = os.path.join(run, "report", "index.html")
if check(os.path.isfile(page), "report/index.html exists"):
    html = open(page).read()
    links = re.findall(r'(?:src|href)="([^"#:]+)"', html)
    missing = [l for l in links if not os.path.exists(os.path.join(run, "report", l))]
    check(len(links) > 0 and not missing, f"report links {len(links)} local files, none missing {missing[:3]}")
    check("MAP@5" in html, "report shows MAP@5")

if failures:
    print(f"{len(failures)} failure(s); kept {tmp}")
    sys.exit(1)
shutil.rmtree(tmp)
print("all smoke checks passed")
