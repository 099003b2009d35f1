#!/usr/bin/python3
"""`sieve report`: on a generated data folder and a hand-made run folder (config.json,
metrics.jsonl, calibration.json, train/test embeddings, test scores), the page is well-formed
offline XHTML with every section; the bar chart counts, the image grids (pixels of the right
images in the right places), the UMAP point counts and the test score agree with what Python
computes; missing inputs give notes instead of failures; bad inputs give named errors.

Usage: test_report.py SIEVE_EXE SOURCE_ROOT   (needs numpy and PIL; a few seconds)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

EXE, ROOT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(ROOT, "tools"))
try:
    import numpy as np
    from PIL import Image
    import safetensors_py as stp  # noqa: E402
    import map5_reference as ref  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

failures = []
tmp = tempfile.mkdtemp(prefix="sieve_report_")
CLASSES = ["circle", "square", "7", "x-mark"]
COLORS = [(220, 40, 40), (40, 170, 40), (40, 60, 220), (230, 200, 30)]
OUTSIDE_COLOR = (150, 40, 200)
K, D = len(CLASSES), 24
rng = np.random.default_rng(0)


def check(cond, what):
    if not cond:
        failures.append(what)
    return cond


def solid(path, color, size=28):
    """A flat image with a small dark corner: flat colour makes thumbnails checkable by pixel."""
    a = np.zeros((size, size, 3), np.uint8)
    a[:] = color
    a[:3, :3] = 0
    Image.fromarray(a).save(path)


def make_data(root, n_train=12, n_test_per=6, n_out=6):
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "test"))
    os.makedirs(os.path.join(root, "outside"))
    rows, test_truth = [], []
    for c in range(K):
        for i in range(n_train):
            id_ = f"tr{c}_{i}"
            solid(os.path.join(root, "train", id_ + ".png"), COLORS[c])
            rows.append((id_, CLASSES[c]))
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
    for c in range(K + 1):  # c == K: distractor test images
        for i in range(n_test_per):
            id_ = f"te{c}_{i}"
            solid(os.path.join(root, "test", id_ + ".png"), COLORS[c] if c < K else OUTSIDE_COLOR)
            test_truth.append((id_, CLASSES[c] if c < K else "-1"))
    for i in range(n_out):
        solid(os.path.join(root, "outside", f"out{i}.png"), OUTSIDE_COLOR)
    with open(os.path.join(root, "solution.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{a},{b}\n" for a, b in test_truth))
    return rows, test_truth


def config(data):
    return {"format": "sieve.run v1", "data": os.path.abspath(data), "classes": CLASSES,
            "model": {"arch": "custom", "blocks": [1, 1, 1, 1], "width": 8, "dropout": 0.2},
            "input": {"image_size": 32, "fit": "pad", "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
            "augment": "none", "crop_padding": 4,
            "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0001},
            "schedule": {"name": "warmup-cosine", "warmup_epochs": 1.0}, "epochs": 5, "batch": 8, "patience": 6,
            "seed": 0, "freeze": "none", "negatives": False, "outside_frac": 0.3, "val_frac": 0.1, "weights": None}


def clustered(labels):
    centres = rng.normal(size=(K + 1, D))
    x = centres[np.where(np.asarray(labels) < 0, K, labels)] + 0.3 * rng.normal(size=(len(labels), D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


def rank_with_threshold(scores, t):
    return ref.rank_with_threshold(scores, t, 5)


def make_run(run, data, train_rows, test_truth):
    os.makedirs(run)
    json.dump(config(data), open(os.path.join(run, "config.json"), "w"))
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for e in range(1, 6):
            f.write(json.dumps({"epoch": e, "step": 6 * e, "lr": 1e-3 * (0.5 ** e), "loss": 0.7 / e,
                                "val_map5": 0.3 + 0.1 * e - (0.15 if e == 5 else 0), "images_per_sec": 100.0,
                                "wall_time_s": 2.0 * e, "nonfinite_skipped": 0}) + "\n")
            f.write(json.dumps({"type": "step", "epoch": e, "step": 6 * e - 3, "loss": 99.0}) + "\n")
    methods = {}
    for name, grid in (("head", np.linspace(0, 1, 101)), ("knn", np.linspace(-1, 1, 201)),
                       ("centroid", np.linspace(-1, 1, 201)), ("fusion", np.linspace(-1, 1, 201))):
        curve = 0.5 + 0.3 * np.exp(-((grid - 0.3) ** 2) / 0.05)
        b = int(np.argmax(curve))
        methods[name] = {"threshold": float(grid[b]), "val_map5": float(curve[b]),
                         "sweep": [[float(t), float(m)] for t, m in zip(grid, curve)]}
    methods["fusion"]["weight"] = 0.7
    methods["fusion"]["weight_sweep"] = [[w, 0.6 + 0.1 * w - 0.1 * (w - 0.7) ** 2] for w in np.linspace(0, 1, 11)]
    json.dump({"format": "sieve.calibration v1", "n_val": 20, "n_val_outside": 6, "checkpoint": "best",
               "recommended": "fusion", "methods": methods}, open(os.path.join(run, "calibration.json"), "w"))
    tr_labels = [CLASSES.index(l) for _, l in train_rows]
    emb, _ = clustered(tr_labels)
    stp.save({"embedding": emb, "label": np.asarray(tr_labels, np.int64)},
             os.path.join(run, "train_embeddings.safetensors"), metadata={"ids": json.dumps([i for i, _ in train_rows])})
    te_labels = [CLASSES.index(l) if l != "-1" else -1 for _, l in test_truth]
    temb, _ = clustered(te_labels)
    ids = [i for i, _ in test_truth]
    stp.save({"embedding": temb, "label": np.full(len(ids), -1, np.int64)},
             os.path.join(run, "test_embeddings.safetensors"), metadata={"ids": json.dumps(ids)})
    # Scores: peaked at the true class for known images, flat and low for distractors; a few
    # deliberate mistakes so the counts are not uniform.
    scores = np.full((len(ids), K), 0.05, np.float32)
    for i, y in enumerate(te_labels):
        if y >= 0:
            scores[i, y] = 0.5 + 0.05 * (i % 5)
            if i % 6 == 5:
                scores[i, (y + 1) % K] = 0.95  # misclassified as the next class
            elif i % 7 == 3:
                scores[i, y] = 0.2  # right class, but below the threshold: -1 ranked first
    thr = 0.3
    ranked = rank_with_threshold(scores, thr)
    stp.save({"scores": scores, "ranked": np.asarray(ranked, np.int64)},
             os.path.join(run, "test_scores.safetensors"),
             metadata={"ids": json.dumps(ids), "method": "head", "threshold": repr(thr), "tta": "none"})
    return ids, scores, ranked, te_labels


def run_report(*args):
    r = subprocess.run([EXE, "report", *args], capture_output=True, text=True, timeout=300)
    return r.returncode, r.stdout, r.stderr


data = os.path.join(tmp, "data")
train_rows, test_truth = make_data(data)
run = os.path.join(tmp, "run")
ids, scores, ranked, te_labels = make_run(run, data, train_rows, test_truth)

rc, out, err = run_report("--run", run, "--solution", os.path.join(data, "solution.csv"), "--umap-points", "40",
                          "--grid-images", "4", "--grid-classes", "5")
page_path = os.path.join(run, "report", "index.html")
if check(rc == 0 and os.path.exists(page_path), f"report failed: rc={rc}\n{out}\n{err}"):
    text = open(page_path, encoding="utf-8").read()
    try:
        root = ET.fromstring(text[text.index("<html"):])
    except ET.ParseError as e:
        root = None
        check(False, f"index.html is not well-formed XML: {e}")
    check("<script" not in text and "http://" not in text.replace("http://www.w3.org/", ""),
          "page has scripts or external references")
    for heading in ["Validation calibration", "Training curves", "Open-set threshold", "20 most predicted",
                    "Test score", "Test images predicted as the top labels", "UMAP"]:
        check(heading in text, f"section '{heading}' missing")
    # Training curves: 5 epoch lines (step lines skipped), best val MAP@5 at epoch 4.
    check("5 epoch(s) logged" in text, "epoch count of the curves (step lines must be skipped)")
    check("best 0.7000 (epoch 4)" in text, "best validation MAP@5 marker")
    # Threshold charts: one per method, each marking its chosen point.
    check(text.count(">t=0.3, 0.8000</text>") == 4, "threshold charts: want 4 chosen markers, got "
          f"{text.count('>t=0.3, 0.8000</text>')}")
    check(">w=0.70</text>" in text, "fusion weight chart")
    # Bar chart: counts of first predictions, -1 included, as Python counts them.
    first = [int(r[0]) for r in ranked]
    want = {}
    for c in first:
        name = "-1 (distractor)" if c < 0 else CLASSES[c]
        want[name] = want.get(name, 0) + 1
    got = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"<title>([^<:]+): (\d+)</title></rect>", text))
    check(got == want, f"bar chart counts: got {got}, want {want}")
    # Test score table equals the reference MAP@5 of the same ranking.
    truth = [l for _, l in test_truth]
    rows = [[("-1" if c < 0 else CLASSES[c]) for c in r] for r in ranked]
    want_map = ref.mapk(rows, truth, 5)
    check(f"<td>{want_map:.4f}</td>" in text, f"test MAP@5 {want_map:.4f} not in the score table")
    known = [i for i, y in enumerate(te_labels) if y >= 0]
    want_argmax = np.mean([int(np.argmax(scores[i])) == te_labels[i] for i in known])
    check(0 < want_argmax < 1, f"fixture: argmax top-1 {want_argmax} should be neither 0 nor 1")
    first_top1 = np.mean([ranked[i][0] == te_labels[i] for i in known])
    check(first_top1 < want_argmax, f"fixture: first-label top-1 {first_top1} should be below argmax's")
    check(f"<td>{want_argmax:.4f}</td>" in text, f"score-argmax top-1 {want_argmax:.4f} not in the score table")
    # Image grids: rows in order of first-prediction counts; left thumbnails are test images
    # predicted as that label, right ones train (or outside) images of it: check their colours.
    order = sorted(want.items(), key=lambda kv: -kv[1])  # stable: ties keep label-id order
    order_ids = sorted(set(first), key=lambda c: (-first.count(c), c))
    for r, c in enumerate(order_ids[:5]):
        p = os.path.join(run, "report", f"grid_{r}.png")
        if not check(os.path.exists(p), f"grid_{r}.png missing"):
            continue
        g = np.asarray(Image.open(p).convert("RGB")).astype(int)
        T, pad, gap, slots = 64, 3, 24, 4
        check(g.shape == (T + 2 * pad, 2 * slots * (T + pad) + gap + pad, 3), f"grid_{r}.png shape {g.shape}")
        # Which test images are predicted c first: their true colours (mistakes included).
        cand = [i for i in range(len(ids)) if first[i] == c]
        key = [(scores[i, c] if c >= 0 else -scores[i].max()) for i in cand]
        top = [cand[j] for j in sorted(range(len(cand)), key=lambda j: -key[j])][:slots]
        for s in range(slots):
            cy, cx = pad + T // 2, pad + s * (T + pad) + T // 2
            if s < len(top):
                y = te_labels[top[s]]
                want_col = COLORS[y] if y >= 0 else OUTSIDE_COLOR
                check(np.abs(g[cy, cx] - want_col).max() <= 3, f"grid {r} left slot {s}: {g[cy, cx]} != {want_col}")
            else:
                check((g[cy, cx] == 255).all(), f"grid {r} left slot {s} should be empty")
            rx = pad + slots * (T + pad) + gap + s * (T + pad) + T // 2
            want_col = COLORS[c] if c >= 0 else OUTSIDE_COLOR
            check(np.abs(g[cy, rx] - want_col).max() <= 3, f"grid {r} right slot {s}: {g[cy, rx]} != {want_col}")
        check(f'src="grid_{r}.png"' in text, f"grid_{r}.png not on the page")
    # UMAP: train by class (40 of 48 points), and train with test (40 + 20).
    svgs = re.findall(r"<svg.*?</svg>", text, re.S)
    umaps = [s for s in svgs if "Train by class" in s or "with test" in s]
    check(len(umaps) == 2, f"want 2 UMAP plots, got {len(umaps)}")
    for s in umaps:
        n = len(re.findall(r"<circle cx=\"[-0-9.]+\" cy=\"[-0-9.]+\" r=\"2.40\"/>", s))
        want_n = 60 if "with test" in s else 40
        check(n == want_n, f"UMAP plot has {n} points, want {want_n}")
        grey = re.search(r'<g fill="#b0b0b0"[^>]*>(.*?)</g>', s, re.S)
        n_grey = grey.group(1).count("<circle") if grey else 0
        check(n_grey == (20 if "with test" in s else 0), f"UMAP plot has {n_grey} grey (test) points")
    check("shows them all" in text, "20-random-classes note for K <= 20")

    # Looking at it: renderable by a browser when one is installed (not required).

# Deterministic: the same inputs and seed give the same page.
first_page = open(page_path, encoding="utf-8").read() if os.path.exists(page_path) else ""
rc, out, err = run_report("--run", run, "--solution", os.path.join(data, "solution.csv"), "--umap-points", "40",
                          "--grid-images", "4", "--grid-classes", "5")
check(rc == 0 and open(page_path, encoding="utf-8").read() == first_page, "report is not deterministic")

# Before predict: no test sections, notes instead, exit 0; --no-umap skips UMAP.
run2 = os.path.join(tmp, "run2")
shutil.copytree(run, run2, ignore=shutil.ignore_patterns("test_*", "report"))
rc, out, err = run_report("--run", run2, "--no-umap")
text2 = open(os.path.join(run2, "report", "index.html")).read() if rc == 0 else ""
check(rc == 0 and "run &#39;sieve predict&#39;" in text2 and "grid_0.png" not in text2 and "UMAP" not in text2
      and "--predict SUB.csv" in err, f"report without predict: rc={rc}\n{err}")
# Without a data folder: grids skipped with a note.
rc, out, err = run_report("--run", run, "--data", os.path.join(tmp, "nowhere"), "--no-umap")
check(rc == 0 and "not found" in err, f"report without data: rc={rc}\n{err}")

# Undecodable images cost their grid slots (each named on the page), not the page.
data3 = os.path.join(tmp, "data3")
shutil.copytree(data, data3)
for i in range(12):
    with open(os.path.join(data3, "train", f"tr3_{i}.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n not really")
rc, out, err = run_report("--run", run, "--data", data3, "--no-umap", "--grid-images", "4")
text3 = open(page_path, encoding="utf-8").read() if rc == 0 else ""
check(rc == 0 and "skipped: " in text3 and "tr3_" in text3, f"report with undecodable images: rc={rc}\n{err}")

# Errors name the file and the line.
with open(os.path.join(run2, "metrics.jsonl"), "a") as f:
    f.write("{not json\n")
rc, out, err = run_report("--run", run2, "--no-umap")
check(rc == 1 and "metrics.jsonl:11" in err and err.startswith("sieve: error: "), f"bad metrics line: rc={rc}\n{err}")
rc, out, err = run_report("--run", os.path.join(tmp, "missing"))
check(rc == 1 and "missing" in err, f"missing run: rc={rc}\n{err}")
os.remove(os.path.join(run2, "config.json"))
rc, out, err = run_report("--run", run2)
check(rc == 1 and "config.json" in err, f"run without config: rc={rc}\n{err}")
with open(os.path.join(run, "test_scores.safetensors"), "r+b") as f:
    f.truncate(40)
rc, out, err = run_report("--run", run, "--no-umap")
check(rc == 1 and "test_scores.safetensors" in err, f"truncated test scores: rc={rc}\n{err}")

if failures:
    print(f"FAIL: {len(failures)} problem(s) (files in {tmp})")
    for f in failures:
        print("-", f)
    sys.exit(1)
shutil.rmtree(tmp)
print("test_report: all checks passed")
