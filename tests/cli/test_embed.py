"""`sieve embed`: embeddings of a folder under a tiny trained run: shape, unit norms, ids in
file-name order, identical images give identical rows, errors are named.
Usage: test_embed.py SIEVE_EXE SOURCE_ROOT"""
import json, os, subprocess, sys, tempfile
import numpy as np
from PIL import Image

sieve, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "tools"))
import safetensors_py as stp  # noqa: E402


def run(*args, ok=True):
    r = subprocess.run([sieve, *args], capture_output=True, text=True, timeout=600)
    if ok:
        assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
    else:
        assert r.returncode == 1, f"{args}: expected a clean failure, got {r.returncode}\n{r.stderr}"
    return r


rng = np.random.default_rng(0)


def img(path, cls):
    a = np.zeros((16, 16, 3), np.uint8)
    a[:, :, cls % 3] = 200
    a += rng.integers(0, 40, a.shape, dtype=np.uint8)
    Image.fromarray(a).save(path)


with tempfile.TemporaryDirectory() as d:
    data = f"{d}/data"
    for sub in ("train", "test", "outside"):
        os.makedirs(f"{data}/{sub}")
    rows = ["id,label"]
    for i in range(24):
        img(f"{data}/train/t{i}.png", i % 3)
        rows.append(f"t{i},c{i % 3}")
    open(f"{data}/train.csv", "w").write("\n".join(rows) + "\n")
    for i in range(4):
        img(f"{data}/test/q{i}.png", i)
        img(f"{data}/outside/o{i}.png", 5)
    run("train", "--data", data, "--out", f"{d}/run", "--recipe", "seed", "--blocks", "1", "--width", "4", "--image-size", "16",
        "--batch", "8", "--max-steps", "2", "--threads", "1", "--workers", "0", "--quiet")

    imgs = f"{d}/imgs"
    os.makedirs(imgs)
    for i, name in enumerate(["b", "a", "c"]):
        img(f"{imgs}/{name}.png", i)
    Image.open(f"{imgs}/a.png").save(f"{imgs}/a_copy.png")
    open(f"{imgs}/notes.txt", "w").write("not an image")
    run("embed", "--run", f"{d}/run", "--images", imgs, "--out", f"{d}/e.safetensors", "--quiet")
    t, meta = stp.load_numpy(f"{d}/e.safetensors")
    e = t["embedding"]
    ids = json.loads(meta["ids"])
    assert ids == ["a", "a_copy", "b", "c"], ids
    assert e.shape == (4, 4 * 4), e.shape  # width 4, one stage: 4 * 2^0 * 4 dims
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5), np.linalg.norm(e, axis=1)
    assert np.array_equal(e[0], e[1])  # the same pixels embed the same
    assert not np.allclose(e[0], e[2])
    assert meta["normalised"] == "yes"
    # Mirrored TTA differs from the plain view (the images are not symmetric) but stays unit-norm.
    run("embed", "--run", f"{d}/run", "--images", imgs, "--out", f"{d}/f.safetensors", "--tta", "flip", "--quiet")
    f = stp.load_numpy(f"{d}/f.safetensors")[0]["embedding"]
    assert np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)

    r = run("embed", "--run", f"{d}/run", "--images", f"{d}/missing", "--out", f"{d}/x.safetensors", ok=False)
    assert "missing: not a directory" in r.stderr, r.stderr
    os.makedirs(f"{d}/empty")
    r = run("embed", "--run", f"{d}/run", "--images", f"{d}/empty", "--out", f"{d}/x.safetensors", ok=False)
    assert "no .png or .jpg images" in r.stderr, r.stderr
    r = run("embed", "--run", f"{d}/norun", "--images", imgs, "--out", f"{d}/x.safetensors", ok=False)
    assert "norun" in r.stderr, r.stderr
    assert not os.path.exists(f"{d}/x.safetensors")
print("embed: ok")
