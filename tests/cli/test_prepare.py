"""`sieve prepare fmnist`: the FMNIST-D protocol checked against the IDX files themselves.
Usage: test_prepare.py SIEVE_EXE SOURCE_ROOT"""
import csv, gzip, os, subprocess, sys, tempfile

sieve, src = sys.argv[1], sys.argv[2]
fm = "/usr/share/datasets/fashion-mnist"
if not os.path.exists(f"{fm}/train-labels-idx1-ubyte.gz"):
    print("dataset-fashion-mnist is not installed"); sys.exit(77)


def labels(split):
    with gzip.open(f"{fm}/{split}-labels-idx1-ubyte.gz") as f:
        return list(f.read()[8:])


def run(*args):
    return subprocess.run([sieve, *args], capture_output=True, text=True)


tr, te = labels("train"), labels("t10k")
with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "fmnist-d")
    r = run("prepare", "fmnist", "--out", out, "--distractors", "2,6", "--seed", "3")
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(open(f"{out}/train.csv")))
    assert rows[0] == ["id", "label"]
    known = [i for i, y in enumerate(tr) if y not in (2, 6)]
    assert len(rows) - 1 == len(known) == 48000, len(rows)
    for (id_, lab), i in zip(rows[1:], known):  # ids name the source index, labels are the class
        assert id_ == f"train_{i:05d}" and lab == str(tr[i]), (id_, lab, i)
        assert os.path.exists(f"{out}/train/{id_}.png")
    assert len(os.listdir(f"{out}/outside")) == 12000
    assert len(os.listdir(f"{out}/test")) == 10000
    sol = list(csv.reader(open(f"{out}/solution.csv")))[1:]
    assert len(sol) == 10000
    assert sum(1 for _, l in sol if l == "-1") == 2000
    # Test ids are a permutation: the class histogram matches the split, the order does not.
    from collections import Counter
    want = Counter("-1" if y in (2, 6) else str(y) for y in te)
    assert Counter(l for _, l in sol) == want
    assert [l for _, l in sol] != ["-1" if y in (2, 6) else str(y) for y in te]
    # A decoded test image equals the IDX pixels of the image its solution row describes.
    from PIL import Image
    with gzip.open(f"{fm}/t10k-images-idx3-ubyte.gz") as f:
        px = f.read()[16:]
    img = Image.open(f"{out}/test/{sol[0][0]}.png").convert("L").tobytes()
    matches = [i for i in range(10000) if px[i * 784:(i + 1) * 784] == img]
    assert matches and all(("-1" if te[i] in (2, 6) else str(te[i])) == sol[0][1] for i in matches)
    # test_classes.csv: each test id's Fashion-MNIST class, distractors included.
    tc = list(csv.reader(open(f"{out}/test_classes.csv")))
    assert tc[0] == ["id", "class"] and [r[0] for r in tc[1:]] == [r[0] for r in sol]
    assert all(l == (c if c not in ("2", "6") else "-1") for (_, c), (_, l) in zip(tc[1:], sol))
    assert Counter(c for _, c in tc[1:]) == Counter(str(y) for y in te)
    sub = list(csv.reader(open(f"{out}/sample_submission.csv")))
    assert sub[0] == ["id", "predictions"] and [r[0] for r in sub[1:]] == [r[0] for r in sol]
    # The folder passes validation.
    r = run("validate", "--data", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "8 classes" in r.stdout
    # Refuses to overwrite, accepts --force; bad options are clear errors.
    r = run("prepare", "fmnist", "--out", out)
    assert r.returncode == 1 and "exists and is not empty" in r.stderr, r.stderr
    r = run("prepare", "fmnist", "--out", os.path.join(tmp, "x"), "--distractors", "3,12")
    assert r.returncode == 1 and "distractor class 12 is not in 0..9" in r.stderr, r.stderr
    # --outside-classes: only class 6's train images in outside/; class 2 is seen only in test/.
    part = os.path.join(tmp, "part")
    r = run("prepare", "fmnist", "--out", part, "--distractors", "2,6", "--outside-classes", "6")
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(f"{part}/outside")) == 6000
    o = sorted(os.listdir(f"{part}/outside"))[0]
    assert tr[int(o[4:9])] == 6, o
    r = run("prepare", "fmnist", "--out", os.path.join(tmp, "z"), "--distractors", "2,6", "--outside-classes", "3")
    assert r.returncode == 1 and "outside class 3 is not one of the distractor classes" in r.stderr, r.stderr
    r = run("prepare", "fmnist", "--out", os.path.join(tmp, "y"), "--source", tmp)
    assert r.returncode == 1 and "train-images-idx3-ubyte.gz: cannot open" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(tmp, "y"))  # nothing half-made
print("prepare: ok")
