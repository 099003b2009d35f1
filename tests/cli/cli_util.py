"""Shared pieces of the tests/cli scripts: running the sieve executable and drawing a tiny
shapes data folder (three classes of white strokes on noise, red-square distractors)."""
import os
import subprocess

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["bar", "circle", "cross"]  # class ids as a data folder orders them (by text)


def run_sieve(exe, *args, timeout=300, env=None):
    """(returncode, stdout, stderr) of `exe args...`."""
    r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return r.returncode, r.stdout, r.stderr


def draw_shape(kind, rng):
    """A 28x28 RGB image: 0 bar, 1 circle, 2 cross, anything else the distractor square."""
    a = (rng.random((28, 28)) * 40).astype(np.uint8)
    im = Image.fromarray(a).convert("RGB")
    d = ImageDraw.Draw(im)
    o = rng.integers(-3, 4, 2)
    if kind == 0:
        d.rectangle([11 + o[0], 3, 16 + o[0], 24], fill=(230, 230, 230))
    elif kind == 1:
        d.ellipse([6 + o[0], 6 + o[1], 21 + o[0], 21 + o[1]], outline=(230, 230, 230), width=3)
    elif kind == 2:
        d.line([4, 4 + o[1], 23, 23 + o[1]], fill=(230, 230, 230), width=3)
        d.line([23, 4 + o[1], 4, 23 + o[1]], fill=(230, 230, 230), width=3)
    else:
        d.rectangle([3 + o[0], 3 + o[1], 11 + o[0], 11 + o[1]], fill=(200, 60, 60))
    return im


def make_shapes_folder(root, rng, n_train=16, n_outside=12, n_test_per=5):
    """Writes a Kaggle-style data folder (train.csv, train/, outside/, test/, sample_submission.csv,
    solution.csv) and returns the test ids in sample_submission order."""
    for sub in ("train", "test", "outside"):
        os.makedirs(os.path.join(root, sub))
    rows, sol, test_ids = [], [], []
    for c in range(3):
        for i in range(n_train):
            draw_shape(c, rng).save(os.path.join(root, "train", f"t{c}_{i}.png"))
            rows.append(f"t{c}_{i},{CLASSES[c]}")
    for i in range(n_outside):
        draw_shape(3, rng).save(os.path.join(root, "outside", f"o{i}.png"))
    for c in range(4):
        for i in range(n_test_per):
            id_ = f"q{len(test_ids):03d}"
            draw_shape(c, rng).save(os.path.join(root, "test", id_ + ".png"))
            test_ids.append(id_)
            sol.append((id_, CLASSES[c] if c < 3 else "-1"))
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("id,label\n" + "\n".join(rows) + "\n")
    with open(os.path.join(root, "solution.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{a},{b}\n" for a, b in sol))
    order = list(test_ids)
    rng.shuffle(order)
    with open(os.path.join(root, "sample_submission.csv"), "w") as f:
        f.write("id,predictions\n" + "".join(f"{i},-1\n" for i in order))
    return order
