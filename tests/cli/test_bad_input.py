#!/usr/bin/python3
"""Bad inputs are named before any work starts (issue 22), by validate and by the command that
would otherwise fail late, hang or pay gigabytes:
- a label a submission cannot hold (`golden retriever`): validate names train.csv and the row,
  train refuses before creating its run folder;
- a test file name that is not UTF-8: validate names it (escaped), predict refuses before
  embedding anything;
- predict --threshold nan|inf, --unknown-rate nan, train --lr nan and the other real-valued
  train flags: refused as flags;
- a FIFO as train.csv or as a weights file: named at once (it used to hang every command);
- a symbolic link from train/ to a file outside the data folder: refused, named by validate;
- --weights holding +Inf: refused at load, naming the file and the tensor;
- a 16-bit 8192x8192 PNG of 130 KB and a small JPEG patched to 8192x8192: refused from the
  header (DecodeLimits::max_decoded_bytes), named by validate, never decoded;
- a 20000x1 image: over the per-side limit, refused before a run folder exists; 8000x1 and
  1x8000 images (within the limits) train and predict.

Usage: test_bad_input.py SIEVE_EXE SOURCE_ROOT   (needs numpy and PIL; about 15 s)
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

EXE, ROOT = os.path.abspath(sys.argv[1]), sys.argv[2]
try:
    import numpy as np
    from PIL import Image
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cli_util import make_shapes_folder, run_sieve  # noqa: E402
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import safetensors_py as stp  # noqa: E402
except ImportError as e:
    print(f"SKIP: {e}")
    sys.exit(77)

failures = []
TINY = ["--recipe", "seed", "--arch", "tiny", "--image-size", "32", "--fit", "pad", "--epochs", "1", "--batch", "8",
        "--augment", "none", "--workers", "1", "--threads", "1", "--quiet"]


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)
    return cond


def sieve(*args, timeout=60):
    return run_sieve(EXE, *args, timeout=timeout)


def copy_data(src, name):
    dst = os.path.join(tmp, name)
    shutil.copytree(src, dst, symlinks=True)
    return dst


def refused(args, *needles, rc_wanted=1):
    """Runs sieve; checks it exits rc_wanted with every needle in stdout+stderr."""
    rc, out, err = sieve(*args)
    text = out + err
    ok = rc == rc_wanted and all(n in text for n in needles)
    check(ok, f"{' '.join(args)}: exit {rc}, wanted {rc_wanted} naming {needles}:\n{text[-1500:]}")
    return text


def garbled_idat(png):
    """The PNG with its IDAT payload replaced by non-zlib bytes and the CRC recomputed: a header
    and chunk structure that pass every check before decoding, pixel data that fails it."""
    out, i = bytearray(png[:8]), 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        kind, data = png[i + 4:i + 8], png[i + 8:i + 8 + n]
        if kind == b"IDAT":
            data = bytes([0xFF]) * len(data)
        out += struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        i += 12 + n
    return bytes(out)


def zero_png16(w, h):
    """A valid 16-bit gray PNG of zeros, deflated row by row (8192x8192 in about 130 KB)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z, row, idat = zlib.compressobj(6), bytes(1 + 2 * w), []
    for _ in range(h):
        idat.append(z.compress(row))
    idat.append(z.flush())
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0, 0, 0, 0)) +
            chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b""))


tmp = tempfile.mkdtemp(prefix="sieve_bad_input_")
try:
    data = os.path.join(tmp, "data")
    make_shapes_folder(data, np.random.default_rng(3), n_train=6, n_outside=4, n_test_per=2)
    Image.new("RGB", (8, 8), (90, 30, 200)).save(os.path.join(tmp, "small.jpg"), quality=90)
    run = os.path.join(tmp, "run")
    rc, out, err = sieve("train", "--data", data, "--out", run, *TINY, timeout=300)
    if not check(rc == 0, f"training the tiny run failed: rc={rc}\n{out}\n{err}"):
        raise SystemExit(1)

    # One rule for labels: a space is refused at the start, naming the file and the row.
    spaced = copy_data(data, "spaced")
    lines = open(os.path.join(spaced, "train.csv")).read().splitlines()
    lines[3] = lines[3].split(",")[0] + ",golden retriever"
    open(os.path.join(spaced, "train.csv"), "w").write("\n".join(lines) + "\n")
    needle = "train.csv:4: label 'golden retriever' contains a space"
    refused(["validate", "--data", spaced], needle)
    spaced_run = os.path.join(tmp, "spaced_run")
    refused(["train", "--data", spaced, "--out", spaced_run, *TINY], needle)
    check(not os.path.exists(spaced_run) or not os.listdir(spaced_run), "a refused train leaves no run folder")

    # A test file name that is not UTF-8 cannot be a submission id: named before predict embeds.
    latin = copy_data(data, "latin1")
    os.remove(os.path.join(latin, "sample_submission.csv"))  # test ids from the file names
    shutil.copy(os.path.join(latin, "test", "q000.png"), os.fsencode(os.path.join(latin, "test")) + b"/caf\xe9.png")
    needle = "caf\\xe9.png: id is not valid UTF-8 (byte 3)"
    refused(["validate", "--data", latin], needle)
    sub = os.path.join(tmp, "latin1.csv")
    refused(["predict", "--run", run, "--data", latin, "--out", sub, "--workers", "1", "--quiet"], needle)
    check(not os.path.exists(sub), "a refused predict writes no submission")

    # Non-finite numbers are refused where a number must be finite (CLI::Range lets NaN through):
    # usage errors, exit 2.
    for flag, value in (("--threshold", "nan"), ("--threshold", "inf"), ("--unknown-rate", "nan")):
        refused(["predict", "--run", run, "--data", data, "--out", sub, "--quiet", flag, value], flag, "not a finite number",
                rc_wanted=2)
    check(not os.path.exists(sub), "a refused predict writes no submission")
    for flag, value in (("--lr", "nan"), ("--max-minutes", "nan"), ("--label-smoothing", "nan"),
                        ("--val-frac", "inf"), ("--weight-decay", "nan")):
        bad_run = os.path.join(tmp, "nan_run")
        refused(["train", "--data", data, "--out", bad_run, flag, value], flag, "not a finite number", rc_wanted=2)
        check(not os.path.exists(bad_run), f"train {flag} {value}: no run folder")

    # A FIFO where a file is expected: named at once instead of waited on forever.
    fifo = copy_data(data, "fifo")
    os.remove(os.path.join(fifo, "train.csv"))
    os.mkfifo(os.path.join(fifo, "train.csv"))
    needle = "train.csv: not a regular file (a FIFO)"
    for args in (["validate", "--data", fifo], ["train", "--data", fifo, "--out", os.path.join(tmp, "fifo_run"), *TINY]):
        try:
            refused(args, needle)
        except subprocess.TimeoutExpired:
            check(False, f"{args[0]} hangs on a FIFO train.csv")
    weights_fifo = os.path.join(tmp, "weights.safetensors")
    os.mkfifo(weights_fifo)
    try:
        refused(["inspect", weights_fifo], "weights.safetensors: not a regular file (a FIFO)")
    except subprocess.TimeoutExpired:
        check(False, "inspect hangs on a FIFO")

    # A symbolic link from train/ to a file outside the data folder is refused and named.
    linked = copy_data(data, "linked")
    secret = os.path.join(tmp, "secret.png")
    shutil.copy(os.path.join(data, "train", "t0_0.png"), secret)
    os.remove(os.path.join(linked, "train", "t0_0.png"))
    os.symlink(secret, os.path.join(linked, "train", "t0_0.png"))
    needle = f"t0_0.png: symbolic link to {secret}, outside the data folder"
    refused(["validate", "--data", linked], needle)
    refused(["train", "--data", linked, "--out", os.path.join(tmp, "linked_run"), *TINY], needle)

    # Initial weights holding +Inf are refused at load, naming the file and the tensor, before
    # any step (they used to give exit 0 with every step skipped and the initial model saved).
    w, _ = stp.load_numpy(os.path.join(run, "last", "model.safetensors"))
    w["conv1.weight"] = w["conv1.weight"].copy()
    w["conv1.weight"].flat[2] = np.inf
    inf_weights = os.path.join(tmp, "inf.safetensors")
    stp.save(w, inf_weights)
    text = refused(["train", "--data", data, "--out", os.path.join(tmp, "inf_run"), *TINY, "--weights", inf_weights],
                   inf_weights, "non-finite [conv1.weight (1 of ", "the first inf at index 2)")
    check("epoch 1" not in text, f"training started with non-finite weights:\n{text[-800:]}")

    # Images that declare a huge decoded size in a small file are refused from their header.
    huge = copy_data(data, "huge")
    with open(os.path.join(huge, "outside", "png16.png"), "wb") as f:
        f.write(zero_png16(8192, 8192))
    check(os.path.getsize(os.path.join(huge, "outside", "png16.png")) < 1 << 20, "the 16-bit PNG is small")
    jpg = bytearray(open(os.path.join(tmp, "small.jpg"), "rb").read())
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = b"\x20\x00\x20\x00"  # height and width 8192
    open(os.path.join(huge, "outside", "patched.jpg"), "wb").write(jpg)
    text = refused(["validate", "--data", huge],
                   "png16.png: PNG is 8192x8192 with 1 channel of 16 bits: 384 MiB decoded, over the limit of 128 MiB",
                   "patched.jpg: JPEG is 8192x8192 with 3 channels of 8 bits: 192 MiB decoded, over the limit")

    # Extreme shapes: a 20000x1 image (it used to fail mid-epoch and leave a half-made run folder)
    # is over the 8192 px per side limit: named by validate, refused by train before its run
    # folder exists. One of 8000x1 and one of 1x8000 are within the limits: train and predict use them.
    wide = copy_data(data, "wide")
    Image.fromarray(np.full((1, 20000, 3), 90, np.uint8)).save(os.path.join(wide, "train", "t0_0.png"))
    refused(["validate", "--data", wide], "t0_0.png: PNG is 20000x1 pixels, over the limit of 8192x8192")
    wide_run = os.path.join(tmp, "wide_run")
    # Found by the header pass over every image, before the run folder is made.
    refused(["train", "--data", wide, "--out", wide_run, *TINY], "image(s) of", "cannot be used (sieve validate",
            "sample 't0_0': ", "t0_0.png: PNG is 20000x1 pixels")
    check(not os.path.exists(wide_run), "a refused train on a 20000x1 image leaves no run folder")
    # Pixel data that only decoding finds bad (a valid header and CRCs over garbage) ends the run
    # after its folder was made: the folder is removed, and the same command then works.
    corrupt = os.path.join(wide, "train", "t0_0.png")
    Image.fromarray(np.full((28, 28, 3), 90, np.uint8)).save(corrupt)
    good = open(corrupt, "rb").read()
    open(corrupt, "wb").write(garbled_idat(good))
    text = refused(["train", "--data", wide, "--out", wide_run, *TINY], "t0_0.png")
    check("removed the unfinished run folder " + wide_run in text and not os.path.exists(wide_run),
          f"a run that failed before its first checkpoint is removed: {text[-600:]}")
    Image.fromarray(np.full((1, 8000, 3), 90, np.uint8)).save(os.path.join(wide, "train", "t0_0.png"))
    test_id = sorted(os.listdir(os.path.join(wide, "test")))[0]
    Image.fromarray(np.full((8000, 1, 3), 90, np.uint8)).save(os.path.join(wide, "test", test_id))
    rc, out, err = sieve("train", "--data", wide, "--out", wide_run, *TINY, timeout=300)
    check(rc == 0, f"train with an 8000x1 image: rc={rc}\n{err[-800:]}")
    rc, out, err = sieve("predict", "--run", wide_run, "--data", wide, "--out", os.path.join(tmp, "wide.csv"), "--quiet",
                         timeout=300)
    check(rc == 0, f"predict with a 1x8000 test image: rc={rc}\n{err[-800:]}")
finally:
    if not os.environ.get("SIEVE_KEEP_TMP"):
        shutil.rmtree(tmp, ignore_errors=True)

if failures:
    print(f"FAIL: {len(failures)} problem(s)")
    sys.exit(1)
print("bad input: ok")
