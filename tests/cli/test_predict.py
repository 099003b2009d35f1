#!/usr/bin/python3
"""`sieve predict` on a run trained for a few steps (tiny ResNet, generated images):
- the submission has one row per test id in sample_submission.csv's order, at most 5 distinct
  labels from the run's classes or -1, and equals numpy's ranking (tools/map5_reference.py) of
  the stored scores at the stored threshold;
- the stored scores of knn / centroid / fusion equal what numpy computes from the stored
  embeddings (and the head's probabilities), with the thresholds and fusion weight of
  calibration.json; --method auto takes calibration's recommendation;
- --threshold and --unknown-rate move -1 where they must; --tta flip gives a mirrored pair of
  test images identical scores (and without it they differ);
- bad invocations fail with named errors and leave no partial submission; an unusable --out is
  refused before any image is embedded, naming the path;
- the run folder is only read (a shared read-only model): nothing in it changes, and the report's
  files (SUB.scores/embeddings.safetensors, SUB.predict.json) are written beside the submission,
  where `sieve report --predict SUB.csv` reads them.

Usage: test_predict.py SIEVE_EXE SOURCE_ROOT   (needs numpy and PIL; about 10 s)
"""
import json
import os
import re
import shutil
import sys
import tempfile

EXE, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import numpy as np
    from PIL import Image
    import map5_reference as ref  # noqa: E402
    import safetensors_py as stp  # noqa: E402
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cli_util import CLASSES, draw_shape, run_sieve  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

failures = []
tmp = tempfile.mkdtemp(prefix="sieve_predict_")
rng = np.random.default_rng(1)


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def sieve(*args, timeout=300):
    return run_sieve(EXE, *args, timeout=timeout)


def draw(kind):
    return draw_shape(kind, rng)


data = os.path.join(tmp, "data")
for sub in ("train", "test", "outside"):
    os.makedirs(os.path.join(data, sub))
rows, sol = [], []
for c in range(3):
    for i in range(16):
        draw(c).save(os.path.join(data, "train", f"t{c}_{i}.png"))
        rows.append(f"t{c}_{i},{CLASSES[c]}")
for i in range(12):
    draw(3).save(os.path.join(data, "outside", f"o{i}.png"))
test_ids = []
for c in range(4):
    for i in range(5):
        id_ = f"q{len(test_ids):03d}"
        draw(c).save(os.path.join(data, "test", id_ + ".png"))
        test_ids.append(id_)
        sol.append((id_, CLASSES[c] if c < 3 else "-1"))
# A mirrored pair for the TTA check (asymmetric: the distractor square sits in a corner).
pair = draw(3)
pair.save(os.path.join(data, "test", "mirror_a.png"))
pair.transpose(Image.FLIP_LEFT_RIGHT).save(os.path.join(data, "test", "mirror_b.png"))
test_ids += ["mirror_a", "mirror_b"]
sol += [("mirror_a", "-1"), ("mirror_b", "-1")]
with open(os.path.join(data, "train.csv"), "w") as f:
    f.write("id,label\n" + "\n".join(rows) + "\n")
with open(os.path.join(data, "solution.csv"), "w") as f:
    f.write("id,label\n" + "".join(f"{a},{b}\n" for a, b in sol))
order = list(test_ids)
rng.shuffle(order)  # sample_submission defines the row order
with open(os.path.join(data, "sample_submission.csv"), "w") as f:
    f.write("id,predictions\n" + "".join(f"{i},-1\n" for i in order))

run = os.path.join(tmp, "run")
rc, out, err = sieve("train", "--data", data, "--out", run, "--recipe", "seed", "--arch", "tiny", "--image-size", "32", "--fit", "pad",
                     "--epochs", "2", "--batch", "8", "--augment", "none", "--workers", "1", "--threads", "1",
                     "--quiet")
if not check(rc == 0, f"training the tiny run failed: rc={rc}\n{out}\n{err}"):
    print("FAIL:", failures[0])
    sys.exit(1)
cal = json.load(open(os.path.join(run, "calibration.json")))


def snapshot(folder):
    """Every file below `folder` with its size and mtime: predict must change none of them."""
    return sorted((os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_size,
                   os.stat(os.path.join(d, f)).st_mtime_ns) for d, _, fs in os.walk(folder) for f in fs)


run_before = snapshot(run)
check(json.load(open(os.path.join(run, "config.json")))["classes"] == CLASSES, "run classes")


def read_submission(path):
    lines = open(path).read().splitlines()
    check(lines[0] == "id,predictions", f"{path}: header {lines[0]!r}")
    return [(l.split(",")[0], l.split(",")[1].split(" ")) for l in lines[1:]]


def predict(name, *extra):
    out_csv = os.path.join(tmp, f"{name}.csv")
    rc, out, err = sieve("predict", "--run", run, "--data", data, "--out", out_csv, "--workers", "1", "--quiet", *extra)
    if not check(rc == 0, f"predict {name} {extra}: rc={rc}\n{out}\n{err}"):
        return None
    t, meta = stp.load_numpy(os.path.join(tmp, f"{name}.scores.safetensors"))
    return {"rows": read_submission(out_csv), "scores": t["scores"], "ranked": t["ranked"], "meta": meta,
            "decision": json.load(open(os.path.join(tmp, f"{name}.predict.json"))), "stdout": out}


def check_submission(name, p, threshold):
    rows = p["rows"]
    check([r[0] for r in rows] == order, f"{name}: rows not in sample_submission order")
    ok = all(1 <= len(l) <= 5 and len(set(l)) == len(l) and all(x in CLASSES + ["-1"] for x in l) for _, l in rows)
    check(ok, f"{name}: a row breaks the label rules: {rows[:3]}")
    want = ref.rank_with_threshold(p["scores"], threshold, 5)
    got = [[-1 if x == "-1" else CLASSES.index(x) for x in l] for _, l in rows]
    check(got == [list(map(int, r)) for r in want], f"{name}: submission differs from numpy's ranking at t={threshold}")
    check(np.array_equal(p["ranked"], np.asarray(want)), f"{name}: stored 'ranked' differs from numpy's")
    check(abs(float(p["meta"].get("threshold", "nan")) - threshold) < 1e-12, f"{name}: stored threshold "
          f"{p['meta'].get('threshold')} != {threshold}")


# Head with the validation threshold.
head = predict("head", "--method", "head")
if head:
    check_submission("head", head, cal["methods"]["head"]["threshold"])
    s = head["scores"]
    check(s.shape == (len(test_ids), 3) and (s >= 0).all() and (s <= 1).all(), f"head scores shape/range {s.shape}")
    check(head["decision"]["threshold_source"] == "validation" and head["decision"]["n_test"] == len(test_ids),
          f"predict.json: {head['decision']}")

# kNN / centroid from the stored embeddings, computed by numpy.
db, _ = stp.load_numpy(os.path.join(run, "train_embeddings.safetensors"))
E, L = db["embedding"].astype(np.float64), db["label"]
E /= np.linalg.norm(E, axis=1, keepdims=True)
te_all, te_meta = stp.load_numpy(os.path.join(tmp, "head.embeddings.safetensors"))
te = te_all["embedding"].astype(np.float64)
check(np.allclose(np.linalg.norm(te, axis=1), 1, atol=1e-5), "test embeddings are not L2-normalised")
sims = te @ E.T
knn_np = np.stack([sims[:, L == c].max(1) for c in range(3)], 1)
cent = np.stack([E[L == c].mean(0) for c in range(3)])
cent /= np.linalg.norm(cent, axis=1, keepdims=True)
cent_np = te @ cent.T
ids_meta = json.loads(te_meta["ids"])
check(ids_meta == order, "test_embeddings ids are not in submission order")
for name, want in (("knn", knn_np), ("centroid", cent_np)):
    p = predict(name, "--method", name)
    if p:
        check_submission(name, p, cal["methods"][name]["threshold"])
        err_ = np.abs(p["scores"] - want).max()
        check(err_ < 1e-4, f"{name}: scores differ from numpy by {err_:.2e}")
fusion = predict("fusion", "--method", "fusion")
if fusion and head:
    w = cal["methods"]["fusion"]["weight"]
    want = w * head["scores"].astype(np.float64) + (1 - w) * knn_np
    check(np.abs(fusion["scores"] - want).max() < 1e-4, "fusion scores != w * head + (1 - w) * knn")
    check_submission("fusion", fusion, cal["methods"]["fusion"]["threshold"])
    check(fusion["decision"].get("fusion_weight") == w, "fusion weight not recorded in predict.json")
auto = predict("auto", "--method", "auto")
if auto:
    check(auto["meta"].get("method") == cal["recommended"], f"--method auto used {auto['meta'].get('method')}, "
          f"calibration recommends {cal['recommended']}")
default = predict("default")  # no --method, no --tta: auto, and the run's TTA (none for this seed-recipe run)
if default:
    check(default["meta"].get("method") == cal["recommended"] and default["meta"].get("tta") == "none",
          f"predict without --method/--tta used {default['meta'].get('method')}/{default['meta'].get('tta')}, "
          f"calibration recommends {cal['recommended']}, the run's tta is none")

# --threshold: above every probability -> -1 first everywhere; below -> -1 after all 3 classes.
p = predict("thr_high", "--threshold", "1.5")
if p:
    check(all(l[0] == "-1" for _, l in p["rows"]), "--threshold 1.5: -1 must come first in every row")
    check(p["decision"]["threshold_source"] == "--threshold", "threshold source not recorded")
p = predict("thr_low", "--threshold", "-0.5")
if p:
    check(all(len(l) == 4 and l[3] == "-1" for _, l in p["rows"]), "--threshold -0.5: -1 must be 4th in every row")
# --unknown-rate 0.25 of 22 rows -> round(5.5) = 6 rows with -1 first (ties aside).
p = predict("rate", "--unknown-rate", "0.25")
if p:
    n_first = sum(l[0] == "-1" for _, l in p["rows"])
    d = p["decision"]
    check(abs(n_first / len(test_ids) - d["unknown_rate_achieved"]) < 1e-12 and abs(n_first - 0.25 * 22) <= 1,
          f"--unknown-rate 0.25: {n_first} rows with -1 first, predict.json says {d}")
    check_submission("rate", p, d["threshold"])

# --distractor-share S: the validation threshold chosen again for S distractors (the per-group
# curves of calibration.json mixed (1 - S) : S, first maximum); estimate: S from the test's scores.
head_cal = json.load(open(os.path.join(run, "calibration.json")))["methods"]["head"]
check("by_group" in head_cal, "calibration.json's head method has no by_group curves")
firsts = {}
for share in ("0.05", "0.9"):
    p = predict("share" + share, "--method", "head", "--distractor-share", share)
    if p and "by_group" in head_cal:
        d, g, s = p["decision"], head_cal["by_group"], float(share)
        mixed = [(1 - s) * k + s * q for k, q in zip(g["map5_known"], g["map5_distractor"])]
        want = head_cal["sweep"][mixed.index(max(mixed))][0]
        check(d.get("distractor_share") == s and abs(d["threshold"] - want) < 1e-12,
              f"--distractor-share {share}: threshold {d['threshold']}, wanted {want} ({d})")
        check_submission("share" + share, p, d["threshold"])
        firsts[share] = sum(l[0] == "-1" for _, l in p["rows"])
check(len(firsts) == 2 and firsts["0.9"] > firsts["0.05"],
      f"--distractor-share 0.9 should put -1 first more often than 0.05: {firsts}")
p = predict("share_est", "--method", "head", "--distractor-share", "estimate")
if p:
    d = p["decision"]
    check(0.0 <= d.get("distractor_share", -1) <= 1.0 and 0.0 <= d.get("share_test_first", -1) <= 1.0
          and "estimated from the test" in p["stdout"], f"--distractor-share estimate: {d}\n{p['stdout']}")
    check_submission("share_est", p, d["threshold"])

# TTA flip: a mirrored pair scores identically with it, differently without it.
ia, ib = order.index("mirror_a"), order.index("mirror_b")
if head:
    check(np.abs(head["scores"][ia] - head["scores"][ib]).max() > 1e-6,
          "without TTA the mirrored pair scores the same (the TTA check below would prove nothing)")
p = predict("tta", "--method", "head", "--tta", "flip")
if p:
    check(np.abs(p["scores"][ia] - p["scores"][ib]).max() < 1e-5, "--tta flip: mirrored pair scores differ "
          f"{p['scores'][ia]} vs {p['scores'][ib]}")
    check(p["meta"].get("tta") == "flip", "tta not recorded in test_scores metadata")
# flip-translate adds the flip pairs of the images moved by one pixel: other scores than flip's.
p6 = predict("tta6", "--method", "head", "--tta", "flip-translate")
if p6 and p:
    check(p6["meta"].get("tta") == "flip-translate", f"tta recorded as {p6['meta'].get('tta')}, not flip-translate")
    check(np.isfinite(p6["scores"]).all() and np.abs(p6["scores"] - p["scores"]).max() > 1e-6,
          "--tta flip-translate scored exactly as --tta flip (the translated views were not used)")

# The submission scores like any other (score reads it back).
rc, out, err = sieve("score", "--submission", os.path.join(tmp, "head.csv"), "--solution",
                     os.path.join(data, "solution.csv"))
check(rc == 0 and "MAP@5" in out, f"score of the predicted submission: rc={rc}\n{err}")

# The run folder was only read by all the predictions above (root ignores a chmod, so compare).
check(snapshot(run) == run_before, "predict changed the run folder: "
      f"{sorted(set(snapshot(run)) ^ set(run_before))}")
# A read-only run folder (mode 0555 down the tree) predicts; only matters when not root.
ro = os.path.join(tmp, "run_ro")
shutil.copytree(run, ro)
for d_, dirs, files in os.walk(ro):
    for f in files:
        os.chmod(os.path.join(d_, f), 0o444)
    os.chmod(d_, 0o555)
rc, out, err = sieve("predict", "--run", ro, "--data", data, "--out", os.path.join(tmp, "ro.csv"), "--quiet")
check(rc == 0 and os.path.exists(os.path.join(tmp, "ro.csv")), f"predict with a read-only run folder: rc={rc}\n{err}")
for d_, dirs, files in os.walk(ro):
    os.chmod(d_, 0o755)

# The report reads predict's files beside the submission.
rc, out, err = sieve("report", "--run", run, "--predict", os.path.join(tmp, "head.csv"), "--no-umap")
page = open(os.path.join(run, "report", "index.html")).read() if rc == 0 else ""
check(rc == 0 and "Not available yet" not in page and "predict" not in err,
      f"report --predict head.csv: rc={rc}\n{err}")
rc, out, err = sieve("report", "--run", run, "--predict", os.path.join(tmp, "never.csv"), "--no-umap")
check(rc == 1 and "never.scores.safetensors" in err, f"report --predict never.csv: rc={rc}\n{err}")

# An unusable --out is refused before any image is embedded (no progress line), naming the path:
# a missing folder, and a path under a regular file (refused for root too).
for bad in (os.path.join(tmp, "no_dir", "s.csv"), os.path.join(data, "train.csv", "s.csv")):
    rc, out, err = sieve("predict", "--run", run, "--data", data, "--out", bad)
    check(rc == 1 and bad in err and not re.search(r"predict: \d+/\d+ \(", out + err),
          f"predict --out {bad}: rc={rc}\n{out}\n{err}")

# Errors, with no partial output.
bad_out = os.path.join(tmp, "bad.csv")
for args, texts, rc_wanted in [  # usage errors exit 2, failures while running 1
    (["--run", os.path.join(tmp, "nope"), "--data", data, "--out", bad_out], ["nope"], 1),
    (["--run", run, "--data", os.path.join(tmp, "nodata"), "--out", bad_out], ["nodata"], 1),
    (["--run", run, "--data", data, "--out", bad_out, "--method", "magic"], ["--method"], 2),
    (["--run", run, "--data", data, "--out", bad_out, "--threshold", "0.5", "--unknown-rate", "0.1"], ["excludes"], 2),
    (["--run", run, "--data", data, "--out", bad_out, "--unknown-rate", "1.5"], ["--unknown-rate"], 2),
    (["--run", run, "--data", data, "--out", bad_out, "--distractor-share", "1.5"], ["--distractor-share"], 2),
    (["--run", run, "--data", data, "--out", bad_out, "--distractor-share", "0.2", "--threshold", "1"],
     ["excludes"], 2),
    (["--run", run, "--data", data, "--out", os.path.join(tmp, "no_dir", "s.csv")], ["no_dir"], 1),
]:
    rc, out, err = sieve("predict", "--quiet", *args)
    check(rc == rc_wanted and err.startswith("sieve: error: ") and all(t in err for t in texts)
          and not os.path.exists(bad_out), f"predict {args}: rc={rc} (wanted {rc_wanted}), wanted {texts}\n{err}")
# A calibration written before the per-group curves: --distractor-share asks for a recalibration.
run_old = os.path.join(tmp, "run_old")
shutil.copytree(run, run_old)
old_cal = json.load(open(os.path.join(run_old, "calibration.json")))
for m in old_cal["methods"].values():
    m.pop("by_group", None)
json.dump(old_cal, open(os.path.join(run_old, "calibration.json"), "w"))
rc, out, err = sieve("predict", "--run", run_old, "--data", data, "--out", bad_out, "--quiet",
                     "--distractor-share", "estimate")
check(rc == 1 and "recalibrate" in err and not os.path.exists(bad_out), f"old calibration: rc={rc}\n{err}")
rc, out, err = sieve("predict", "--run", run_old, "--data", data, "--out", bad_out, "--quiet")
check(rc == 0, f"an old calibration still predicts without --distractor-share: rc={rc}\n{err}")
os.remove(bad_out)
# A validation that never gave outside images -1 first more often than known ones: the estimate
# is refused before any image is embedded (no progress line), a given share still works.
blind_cal = json.load(open(os.path.join(run, "calibration.json")))
for m in blind_cal["methods"].values():
    m["by_group"]["first_distractor"] = m["by_group"]["first_known"]
json.dump(blind_cal, open(os.path.join(run_old, "calibration.json"), "w"))
rc, out, err = sieve("predict", "--run", run_old, "--data", data, "--out", bad_out, "--distractor-share", "estimate")
check(rc == 1 and "nothing to go on" in err and not re.search(r"predict: \d+/\d+ \(", out + err)
      and not os.path.exists(bad_out), f"estimate without a separating threshold: rc={rc}\n{out}\n{err}")
rc, out, err = sieve("predict", "--run", run_old, "--data", data, "--out", bad_out, "--quiet",
                     "--distractor-share", "0.3")
check(rc == 0, f"a given share needs no separating threshold: rc={rc}\n{err}")
os.remove(bad_out)
# A run without calibration: the threshold must come from the command line.
run2 = os.path.join(tmp, "run2")
shutil.copytree(run, run2)
os.remove(os.path.join(run2, "calibration.json"))
rc, out, err = sieve("predict", "--run", run2, "--data", data, "--out", bad_out, "--quiet")
check(rc == 1 and "calibration.json" in err and "--threshold" in err and not os.path.exists(bad_out),
      f"predict without calibration: rc={rc}\n{err}")
rc, out, err = sieve("predict", "--run", run2, "--data", data, "--out", bad_out, "--quiet", "--threshold", "0.5")
check(rc == 0 and os.path.exists(bad_out), f"predict without calibration but with --threshold: rc={rc}\n{err}")
# A data folder with an undecodable test image: named, and the old submission is untouched.
with open(os.path.join(data, "test", "q000.png"), "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n broken")
before = open(os.path.join(tmp, "head.csv")).read()
rc, out, err = sieve("predict", "--run", run, "--data", data, "--out", os.path.join(tmp, "head.csv"), "--quiet")
check(rc == 1 and "q000" in err and open(os.path.join(tmp, "head.csv")).read() == before,
      f"undecodable test image: rc={rc}\n{err}")
leftovers = [f for f in os.listdir(tmp) if f.startswith(".") or f.endswith(".tmp")]
check(not leftovers, f"temporary files left behind: {leftovers}")

if failures:
    print(f"FAIL: {len(failures)} problem(s) (files in {tmp})")
    for f in failures:
        print("-", f)
    sys.exit(1)
shutil.rmtree(tmp)
print("test_predict: all checks passed")
