"""`sieve validate`: clean folders pass, every kind of problem is named, nothing crashes.
Usage: test_validate.py SIEVE_EXE SOURCE_ROOT"""
import os, random, subprocess, sys, tempfile
from PIL import Image

sieve = sys.argv[1]


def run(*args):
    r = subprocess.run([sieve, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), f"crash or abort: {r.returncode}\n{r.stderr}"
    assert "Segmentation" not in r.stderr and "terminate" not in r.stderr
    return r


def png(path, v=128):
    Image.new("RGB", (8, 8), (v, v, v)).save(path)


with tempfile.TemporaryDirectory() as d:
    for sub in ("train", "test", "outside"):
        os.makedirs(f"{d}/{sub}")
    with open(f"{d}/train.csv", "w") as f:
        f.write("id,label\na,cat\nb,dog\nc,cat\n")
    for i in "abc":
        png(f"{d}/train/{i}.png")
    png(f"{d}/test/t1.png")
    png(f"{d}/outside/o1.png")
    r = run("validate", "--data", d)
    assert r.returncode == 0, r.stdout
    assert "cat=2 dog=1" in r.stdout and "clean" in r.stdout, r.stdout

    # Now break it in every way at once.
    with open(f"{d}/train.csv", "w") as f:
        f.write('id,label\na,cat\na,dog\n../evil,cat\nb,-1\nghost,cat\n"c",cat,extra\n')
    png(f"{d}/train/orphan.png")
    open(f"{d}/test/t2.jpg", "wb").write(b"\xff\xd8\xff\xe0 truncated")
    open(f"{d}/outside/big.png", "wb").write(open(f"{d}/train/a.png", "rb").read())
    Image.new("RGB", (300, 10)).save(f"{d}/outside/wide.png")
    r = run("validate", "--data", d, "--max-side", "100")
    assert r.returncode == 1, r.stdout
    out = r.stdout
    # One pass names them all: the ragged row does not hide the rows, files and images.
    needles = ("train.csv:7: 3 fields but the header has 2", "train.csv:3: duplicate id 'a'",
               "train.csv:4: id contains a path separator", "train.csv:5: label -1 is reserved",
               "train.csv:6: no image file train/ghost", "orphan.png: image file has no row", "t2.jpg", "wide.png")
    for needle in needles:
        assert needle in out, (needle, out)
    errors = [l for l in out.splitlines() if l.startswith("error: ")]
    assert f"{len(errors)} problem(s) found (1 CSV, 3 id and label, 3 file, 2 image)" in out, out

    # A flood of one kind is cut per kind, and hides no other kind; the total counts them all.
    for i in range(30):
        open(f"{d}/test/junk{i:02d}.png", "wb").write(b"not a png")
    out = run("validate", "--data", d, "--max-side", "100", "--max-listed", "5").stdout
    for needle in needles[:6]:
        assert needle in out, (needle, out)
    assert "... and 27 more image problems" in out, out
    assert "39 problem(s) found (1 CSV, 3 id and label, 3 file, 32 image)" in out, out
    for i in range(30):
        os.remove(f"{d}/test/junk{i:02d}.png")

    # Random garbage in every file never crashes it.
    rng = random.Random(7)
    for trial in range(20):
        with open(f"{d}/train.csv", "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(200))))
        with open(f"{d}/test/t1.png", "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(rng.randrange(300))))
        assert run("validate", "--data", d).returncode == 1
    assert run("validate", "--data", f"{d}/missing").returncode == 1
print("validate: ok")
