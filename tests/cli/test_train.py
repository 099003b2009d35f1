#!/usr/bin/python3
"""End-to-end tests of `sieve train` on a tiny generated data folder (4 shape classes + outside
+ test PNGs), a 2-stage width-8 ResNet at 32x32, a few optimizer steps: seconds per run.

    python3 test_train.py SIEVE_EXE [SOURCE_ROOT]      exit 0 = pass, 77 = skipped, else fail

Checks: the run folder (config.json, split.json, metrics.jsonl, last/, best/, calibration.json,
train_embeddings.safetensors) against what the data and flags imply; --max-steps then --resume
reproducing an uninterrupted run bit for bit; the frozen-backbone embedding-cache path;
--negatives; --weights; and clear errors for bad flags and bad data.
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    from PIL import Image, ImageDraw
except ImportError as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(77)

EXE = os.path.abspath(sys.argv[1])
CLASSES = ["circle", "hbar", "square", "vbar"]  # the order sieve gives text labels (sorted)
PER_CLASS, N_OUTSIDE, N_TEST = 10, 8, 12
# The seed recipe's settings are checked here, the fast recipe's in test_fast_recipe.
SMALL = ["--recipe", "seed", "--blocks", "1,1", "--width", "8", "--image-size", "32", "--fit", "pad", "--batch", "8",
         "--workers", "1", "--quiet"]
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)
    return cond


def make_data(root, seed=0, size=24):
    """Shapes on a dark background: class = shape; outside = a diagonal cross."""
    rnd = random.Random(seed)
    for d in ("train", "outside", "test"):
        os.makedirs(os.path.join(root, d), exist_ok=True)

    def draw(kind, s):
        img = Image.new("RGB", (s, s), (rnd.randint(0, 40),) * 3)
        d = ImageDraw.Draw(img)
        j = lambda: rnd.randint(-2, 2)
        c = tuple(rnd.randint(180, 255) for _ in range(3))
        m = s // 4
        if kind == "circle":
            d.ellipse([m + j(), m + j(), s - m + j(), s - m + j()], fill=c)
        elif kind == "square":
            d.rectangle([m + j(), m + j(), s - m + j(), s - m + j()], outline=c, width=2)
        elif kind == "hbar":
            d.rectangle([2, s // 2 - 3 + j(), s - 3, s // 2 + 3 + j()], fill=c)
        elif kind == "vbar":
            d.rectangle([s // 2 - 3 + j(), 2, s // 2 + 3 + j(), s - 3], fill=c)
        else:
            d.line([0, 0, s, s], fill=c, width=3)
            d.line([0, s, s, 0], fill=c, width=3)
        return img

    rows = []
    for ci, name in enumerate(["circle", "square", "hbar", "vbar"]):
        for k in range(PER_CLASS):
            i = f"tr{ci}_{k}"
            draw(name, size + rnd.randint(-4, 4)).save(os.path.join(root, "train", i + ".png"))
            rows.append((i, name))
    with open(os.path.join(root, "train.csv"), "w") as f:
        f.write("id,label\n" + "".join(f"{a},{b}\n" for a, b in rows))
    for k in range(N_OUTSIDE):
        draw("cross", size).save(os.path.join(root, "outside", f"out{k}.png"))
    for k in range(N_TEST):
        draw((CLASSES + ["cross"])[k % 5], size).save(os.path.join(root, "test", f"te{k}.png"))
    return dict(rows)


def sieve(*args, expect=0, timeout=600):
    p = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if expect is not None and p.returncode != expect:
        print(f"$ sieve {' '.join(map(str, args))}\n-> exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return out, meta


def metrics(run):
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def state(run, slot="last"):
    return json.load(open(os.path.join(run, slot, "state.json")))


def test_fresh_run(tmp, data, labels):
    run = os.path.join(tmp, "run")
    p = sieve("train", "--data", data, "--out", run, "--epochs", "3", "--seed", "3", *SMALL)
    if not check(p.returncode == 0, "fresh tiny run exits 0"):
        return None
    for f in ("config.json", "split.json", "metrics.jsonl", "calibration.json", "train_embeddings.safetensors",
              "last/MANIFEST", "last/model.safetensors", "last/optimizer.safetensors", "last/state.json",
              "best/MANIFEST", "best/model.safetensors"):
        check(os.path.exists(os.path.join(run, f)), f"run folder has {f}")

    cfg = json.load(open(os.path.join(run, "config.json")))
    check(cfg["data"] == os.path.abspath(data), f"config.data is absolute: {cfg['data']}")
    check(cfg["classes"] == CLASSES, f"config.classes {cfg['classes']}")
    check(cfg["model"]["blocks"] == [1, 1] and cfg["model"]["width"] == 8 and cfg["model"]["dropout"] == 0.2,
          f"config.model {cfg['model']}")
    check(cfg["input"]["image_size"] == 32 and cfg["input"]["fit"] == "pad" and cfg["input"]["mean"] == [0.485, 0.456, 0.406],
          f"config.input {cfg['input']}")
    check(cfg["augment"] == "crop-flip" and cfg["crop_padding"] == 4, "config augment crop-flip, padding S/8")
    check(cfg["epochs"] == 3 and cfg["batch"] == 8 and cfg["seed"] == 3 and cfg["freeze"] == "none"
          and cfg["negatives"] is False and cfg["weights"] is None and cfg["outside_frac"] == 0.3
          and cfg["val_frac"] == 0.1 and cfg["optimizer"]["lr"] == 0.001, "config scalars")

    # Stratified split: floor(10 * 0.1) = 1 per class; outside = round(4 * 0.3 / 0.7) = 2.
    split = json.load(open(os.path.join(run, "split.json")))
    val = split["val_ids"]
    per_class = {c: sum(labels[i] == c for i in val) for c in CLASSES}
    check(all(v == 1 for v in per_class.values()), f"one held-out image per class: {per_class}")
    check(len(split["val_outside_ids"]) == 2 and all(i.startswith("out") for i in split["val_outside_ids"]),
          f"2 outside validation images: {split['val_outside_ids']}")
    check(split["n_train"] == 4 * PER_CLASS - 4 and split["n_negatives"] == 0, "n_train 36, no negatives")

    m = metrics(run)
    steps_per_epoch = math.ceil(36 / 8)
    check([l["epoch"] for l in m] == [1, 2, 3], f"metrics.jsonl has epochs 1..3: {[l.get('epoch') for l in m]}")
    check([l["step"] for l in m] == [steps_per_epoch * e for e in (1, 2, 3)], "metrics steps = 5 per epoch")
    check(all(0.0 <= l["val_map5"] <= 1.0 and math.isfinite(l["loss"]) and l["lr"] > 0 for l in m),
          "metrics lines carry loss, lr and val_map5 in [0, 1]")
    check(state(run)["step"] == 15 and state(run)["epoch"] == 3, "last/ is the end of epoch 3")

    weights, meta = read_safetensors(os.path.join(run, "best", "model.safetensors"))
    check(weights["fc.weight"].shape == (4, 64) and weights["fc.bias"].shape == (4,), "head fc [4, 8*2*4]")
    check(weights["conv1.weight"].shape == (8, 3, 7, 7), "stem conv1 [8,3,7,7]")
    check("layer2.0.downsample.0.weight" in weights and "layer2.0.bn3.running_var" in weights
          and "bn1.num_batches_tracked" in weights and not any(k.startswith("layer3") for k in weights),
          "torchvision names, BN buffers, two stages only")

    # Calibration: each method's chosen threshold is the first maximum of its own sweep.
    cal = json.load(open(os.path.join(run, "calibration.json")))
    n_val = len(val) + len(split["val_outside_ids"])
    check(cal["n_val"] == n_val and cal["n_val_outside"] == 2, f"calibration n_val {cal['n_val']} == {n_val}")
    check(cal["checkpoint"] == "best", "calibrated on best/")
    for name, grid in (("head", 101), ("knn", 201), ("centroid", 201), ("fusion", 201)):
        c = cal["methods"].get(name)
        if not check(c is not None, f"calibration has {name}"):
            continue
        sweep = np.array(c["sweep"])
        check(sweep.shape == (grid, 2), f"{name} sweep has {grid} thresholds")
        lo, hi = (0.0, 1.0) if name == "head" else (-1.0, 1.0)
        check(abs(sweep[0, 0] - lo) < 1e-12 and abs(sweep[-1, 0] - hi) < 1e-12, f"{name} grid spans [{lo}, {hi}]")
        best = int(np.argmax(sweep[:, 1]))
        check(c["val_map5"] == sweep[best, 1] and c["threshold"] == sweep[best, 0],
              f"{name}: threshold {c['threshold']} / MAP {c['val_map5']} is the sweep's first maximum")
        # Every MAP@5 over n_val items is a multiple of 1/(60 n_val) (APs are 1, 1/2 .. 1/5).
        check(np.allclose(sweep[:, 1] * 60 * n_val, np.round(sweep[:, 1] * 60 * n_val), atol=1e-6),
              f"{name} sweep values are MAP@5s over {n_val} items")
    f = cal["methods"]["fusion"]
    check(0.0 <= f["weight"] <= 1.0 and len(f["weight_sweep"]) == 11, "fusion weight tuned over 0, 0.1 .. 1")
    check(f["val_map5"] == max(w[1] for w in f["weight_sweep"]), "fusion MAP is its best weight's")
    check(cal["recommended"] in cal["methods"] and cal["methods"][cal["recommended"]]["val_map5"] ==
          max(v["val_map5"] for v in cal["methods"].values()), "recommended = best validation method")
    check(cal["methods"]["head"]["val_map5"] == max(l["val_map5"] for l in m),
          "head calibration equals the best epoch's val_map5 (same weights, same sweep)")

    emb, emeta = read_safetensors(os.path.join(run, "train_embeddings.safetensors"))
    ids = json.loads(emeta["ids"])
    train_ids = sorted(set(labels) - set(val))
    check(sorted(ids) == train_ids, "train embeddings cover exactly the training images")
    check(emb["embedding"].shape == (36, 64) and emb["embedding"].dtype == np.float32, "embedding [36, 64] F32")
    check([CLASSES[int(l)] for l in emb["label"]] == [labels[i] for i in ids], "embedding labels match train.csv")
    check(np.all(np.isfinite(emb["embedding"])) and np.abs(emb["embedding"]).sum() > 0, "embeddings finite, non-zero")
    return run


def test_resume_exact(tmp, data, full_run):
    run = os.path.join(tmp, "run_resume")
    p = sieve("train", "--data", data, "--out", run, "--epochs", "3", "--seed", "3", "--max-steps", "7", *SMALL)
    check(p.returncode == 0, "--max-steps 7 run exits 0")
    st = state(run)
    check(st["step"] == 7 and st["epoch"] == 1 and st["batch"] == 2, f"stopped at step 7 = epoch 2 batch 2: {st}")
    check(len(metrics(run)) == 1, "one epoch logged before the stop")
    check(json.load(open(os.path.join(run, "calibration.json")))["checkpoint"] == "best",
          "calibration after a limit uses best/ (epoch 1)")
    # Resume with another worker count: batches are a pure function of (seed, epoch, index).
    args = ["train", "--resume", run, "--workers", "2", "--quiet"]
    p = sieve(*args, "--max-steps", "2")
    check(p.returncode == 0 and state(run)["step"] == 9, "--max-steps counts steps of this invocation (7 + 2)")
    p = sieve(*args)
    check(p.returncode == 0, "--resume exits 0")
    check(state(run)["step"] == 15 and state(run)["epoch"] == 3, "resumed run finished 3 epochs")
    m_full, m_res = metrics(full_run), metrics(run)
    check([l["val_map5"] for l in m_res] == [l["val_map5"] for l in m_full]
          and [l["loss"] for l in m_res] == [l["loss"] for l in m_full],
          "resumed run logs the same losses and val MAP@5 as the uninterrupted one")
    a, _ = read_safetensors(os.path.join(full_run, "last", "model.safetensors"))
    b, _ = read_safetensors(os.path.join(run, "last", "model.safetensors"))
    check(a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a),
          "resumed weights equal the uninterrupted run's bit for bit")
    # Resuming a finished run only recalibrates.
    p = sieve("train", "--resume", run)
    check(p.returncode == 0 and "recalibrating only" in p.stderr and state(run)["step"] == 15,
          "resuming a finished run recalibrates without training")


def test_cache_and_negatives(tmp, data, full_run):
    run = os.path.join(tmp, "run_cache")
    base = ["train", "--data", data, "--out", run, "--epochs", "4", "--seed", "3", "--freeze", "backbone",
            "--augment", "none", "--negatives", "--lr", "0.01", *SMALL]
    base.remove("--quiet")
    p = sieve(*base, "--max-steps", "3")
    if not check(p.returncode == 0, "frozen-backbone cached run exits 0"):
        return
    check("cached embeddings" in p.stderr and p.stderr.count("computed and cached") == 2
          and p.stderr.count("from the cache") == 2, "first run computes the cache, calibration reuses it")
    cache = os.path.join(run, "cache")
    check(os.path.isdir(cache) and len(os.listdir(cache)) == 2, "two cache files (train, validation)")
    split = json.load(open(os.path.join(run, "split.json")))
    check(split["n_negatives"] == N_OUTSIDE - 2, f"negatives = the 6 outside images not in validation")
    check("+ 6 negatives" in p.stderr, "progress names the negatives")
    p = sieve("train", "--resume", run)
    check(p.returncode == 0 and p.stderr.count("from the cache") == 4 and "computed" not in p.stderr,
          "resume reuses both cached embeddings (training and calibration)")
    check(state(run)["epoch"] == 4, "cached run finished its epochs")
    trained, _ = read_safetensors(os.path.join(full_run, "best", "model.safetensors"))
    w, _ = read_safetensors(os.path.join(run, "best", "model.safetensors"))
    init_run = os.path.join(tmp, "run_init")
    p = sieve("train", "--data", data, "--out", init_run, "--epochs", "1", "--seed", "3", "--freeze", "backbone",
              "--max-steps", "1", *SMALL)
    init, _ = read_safetensors(os.path.join(init_run, "last", "model.safetensors"))
    check(np.array_equal(w["layer1.0.conv2.weight"], init["layer1.0.conv2.weight"])
          and np.array_equal(w["conv1.weight"], init["conv1.weight"]),
          "frozen backbone keeps its initial convolution weights")
    check(not np.array_equal(w["layer1.0.conv2.weight"], trained["layer1.0.conv2.weight"]),
          "(the fully trained run did change them)")
    check(not np.array_equal(w["fc.weight"], init["fc.weight"]), "the head trained")
    cal = json.load(open(os.path.join(run, "calibration.json")))
    check(cal["n_val_outside"] == 2 and set(cal["methods"]) == {"head", "knn", "centroid", "fusion"},
          "cached run calibrates every method")
    check(cal["methods"]["head"]["val_map5"] == max(l["val_map5"] for l in metrics(run)),
          "cached calibration's head MAP equals the best epoch's validation MAP")
    emb, emeta = read_safetensors(os.path.join(run, "train_embeddings.safetensors"))
    check(emb["embedding"].shape == (36, 64) and all(i.startswith("tr") for i in json.loads(emeta["ids"])),
          "cached run's train embeddings hold the 36 labelled images, not the negatives")


def test_weights(tmp, data, full_run):
    run = os.path.join(tmp, "run_weights")
    p = sieve("train", "--data", data, "--out", run, "--epochs", "1", "--max-steps", "1", "--weights",
              os.path.join(full_run, "best", "model.safetensors"), *[a for a in SMALL if a != "--quiet"])
    check(p.returncode == 0 and "loaded" in p.stderr, "--weights loads a state dict")
    cfg = json.load(open(os.path.join(run, "config.json")))
    check(cfg["weights"] == os.path.join(full_run, "best", "model.safetensors"), "config records the weights file")
    p = sieve("train", "--data", data, "--out", os.path.join(tmp, "run_w2"), "--epochs", "1", "--weights",
              os.path.join(full_run, "best", "model.safetensors"), "--blocks", "1", "--width", "8",
              "--image-size", "32", expect=None)
    check(p.returncode == 1 and "layer2" in p.stderr, f"--weights of another architecture names the tensors: {p.stderr[-300:]}")


def test_fit_modes(tmp, data):
    """Both fits on images larger than the input (20-28 px into 16 px): resize + centre crop,
    and letterbox shrinking; neither may fail on mixed sizes."""
    for fit in ("resize", "pad"):
        run = os.path.join(tmp, f"run_fit_{fit}")
        args = [a for a in SMALL if a not in ("32", "pad")]
        args[args.index("--image-size") + 1:args.index("--image-size") + 1] = ["16"]
        args[args.index("--fit") + 1:args.index("--fit") + 1] = [fit]
        p = sieve("train", "--data", data, "--out", run, "--epochs", "1", "--augment", "none", *args)
        ok = p.returncode == 0
        check(ok, f"--fit {fit} at 16 px trains")
        if ok:
            cfg = json.load(open(os.path.join(run, "config.json")))
            check(cfg["input"]["fit"] == fit and cfg["input"]["image_size"] == 16 and cfg["augment"] == "none",
                  f"config records --fit {fit}, size 16, augment none")


def test_fast_recipe(tmp, data, labels):
    """The default recipe: input settings from the images, a basic-block CIFAR-stem ResNet,
    softmax with an "other" class trained on the outside images, SGD with a schedule that ends
    at 0, flip TTA; on gray images one input channel; --max-minutes plans the whole command."""
    run = os.path.join(tmp, "run_fast")
    net = ["--arch", "cifar-resnet8", "--width", "4", "--batch", "8", "--workers", "1", "--seed", "3"]
    p = sieve("train", "--data", data, "--out", run, "--epochs", "2", *net)
    if not check(p.returncode == 0, "fast recipe run exits 0"):
        return
    check("recipe fast; input from 40 of 40 training images" in p.stderr, "the derived input settings are printed")
    cfg = json.load(open(os.path.join(run, "config.json")))
    check(cfg["recipe"] == "fast" and cfg["model"]["block"] == "basic" and cfg["model"]["stem"] == "cifar"
          and cfg["model"]["global_pool"] == "avg"
          and cfg["model"]["blocks"] == [1, 1, 1] and cfg["model"]["width"] == 4, f"fast model {cfg['model']}")
    check(cfg["model"]["head"] == "softmax-other" and cfg["model"]["label_smoothing"] == 0.1
          and cfg["model"]["dropout"] == 0.0, "softmax-other head, label smoothing 0.1, no dropout")
    check(cfg["optimizer"]["name"] == "sgd" and cfg["optimizer"]["lr"] == 0.2 and cfg["negatives"] is True
          and cfg["tta"] == "flip-translate", "SGD lr 0.2, negatives, flip-translate TTA")
    # Input from the images: every training image (40 < 2048), colour, sizes 20..28.
    imgs = [np.asarray(Image.open(os.path.join(data, "train", f"{i}.png")).convert("RGB"), dtype=np.float64) / 255
            for i in labels]
    side = max(max(a.shape[:2]) for a in imgs)
    px = np.concatenate([a.reshape(-1, 3) for a in imgs])
    inp = cfg["input"]
    check(inp["channels"] == 3 and inp["image_size"] == side and inp["fit"] == "pad",
          f"3 channels, size {side} (the larger side), letterboxed: {inp}")
    check(np.allclose(inp["mean"], px.mean(0), atol=1e-6) and np.allclose(inp["std"], px.std(0), atol=1e-6),
          f"mean/std of the training pixels {px.mean(0)} {px.std(0)}: {inp['mean']} {inp['std']}")
    check(cfg["crop_padding"] == max(1, (side + 7) // 14), f"crop padding S/14: {cfg['crop_padding']}")
    w, _ = read_safetensors(os.path.join(run, "last", "model.safetensors"))
    check(w["conv1.weight"].shape == (4, 3, 3, 3) and "layer3.0.conv2.weight" in w and "layer1.0.conv3.weight" not in w,
          "3x3 stem, basic blocks (conv1/conv2), three stages")
    check(w["fc.weight"].shape == (5, 16), f"head: 4 classes + other over 16 dims: {w['fc.weight'].shape}")
    split = json.load(open(os.path.join(run, "split.json")))
    check(split["n_negatives"] == N_OUTSIDE - 2, "outside images not in validation train as 'other'")
    m = metrics(run)
    check([l["epoch"] for l in m] == [1, 2] and m[-1]["lr"] == 0.0, f"2 epochs, the last step at lr 0: {m[-1]}")
    check(cfg["validate_every"] == 4 and not any("val_map5" in l for l in m),
          f"the fast recipe validates every 4th epoch (none of 2): {cfg['validate_every']}, {m}")
    check(not os.path.exists(os.path.join(run, "best")), "no early stopping, so no best/")
    cal = json.load(open(os.path.join(run, "calibration.json")))
    sweep = np.array(cal["methods"]["head"]["sweep"])
    check(cal["checkpoint"] == "last" and sweep.shape == (241, 2) and sweep[0, 0] == -12 and sweep[-1, 0] == 12,
          "head threshold swept over log(p_class / p_other) in [-12, 12]")
    check(cfg["distractor_share"] is None and cal["distractor_share"] is None,
          "by default the thresholds are chosen for the validation set's own distractor share")

    # The default network: PoolNet 16-32-64-128 (a plain conv net that widens before each pool).
    run_d = os.path.join(tmp, "run_default_net")
    p = sieve("train", "--data", data, "--out", run_d, "--epochs", "1", "--batch", "8", "--workers", "1",
              "--validate-every", "1")
    if check(p.returncode == 0, "fast recipe with its default network exits 0"):
        cfg = json.load(open(os.path.join(run_d, "config.json")))
        check(cfg["validate_every"] == 1 and "val_map5" in metrics(run_d)[0],
              f"--validate-every 1: epoch 1 validated: {metrics(run_d)}")
        check(cfg["model"]["arch"] == "poolnet" and cfg["model"]["block"] == "pool" and cfg["model"]["blocks"] == [1, 1, 1]
              and cfg["model"]["width"] == 16 and cfg["model"]["global_pool"] == "max",
              f"default network: poolnet 16, 3 stages, global max pool: {cfg['model']}")
        w, _ = read_safetensors(os.path.join(run_d, "last", "model.safetensors"))
        check(w["conv1.weight"].shape == (16, 3, 3, 3) and w["layer1.conv1.weight"].shape == (32, 16, 3, 3)
              and w["layer3.conv2.weight"].shape == (128, 128, 3, 3) and "layer4.conv1.weight" not in w
              and w["fc.weight"].shape == (5, 128), "poolnet tensors: stem 16, stages 32/64/128, head over 128")
        sub = os.path.join(tmp, "default_net_sub.csv")
        p = sieve("predict", "--run", run_d, "--data", data, "--out", sub, "--quiet")
        check(p.returncode == 0 and os.path.exists(sub), f"predict with a poolnet run: {p.stderr[-300:]}")

    # --global-pool max: the embedding is the max over each channel's plane (poolnet only).
    run_m = os.path.join(tmp, "run_max_pool")
    p = sieve("train", "--data", data, "--out", run_m, "--epochs", "1", "--arch", "poolnet", "--width", "4",
              "--global-pool", "max", "--batch", "8", "--workers", "1", "--quiet")
    if check(p.returncode == 0, f"poolnet --global-pool max exits 0: {p.stderr[-300:]}"):
        check(json.load(open(os.path.join(run_m, "config.json")))["model"]["global_pool"] == "max",
              "config.json records the global max pool")
        # --clip-grad-norm reaches the trainer: the same run with every step clipped to a tiny norm
        # ends elsewhere, and config.json records it.
        run_c = os.path.join(tmp, "run_clipped")
        p = sieve("train", "--data", data, "--out", run_c, "--epochs", "1", "--arch", "poolnet", "--width", "4",
                  "--global-pool", "max", "--batch", "8", "--workers", "1", "--quiet", "--clip-grad-norm", "1e-9")
        if check(p.returncode == 0, f"--clip-grad-norm exits 0: {p.stderr[-300:]}"):
            wm, _ = read_safetensors(os.path.join(run_m, "last", "model.safetensors"))
            wc, _ = read_safetensors(os.path.join(run_c, "last", "model.safetensors"))
            check(json.load(open(os.path.join(run_c, "config.json")))["optimizer"]["max_grad_norm"] == 1e-9
                  and not np.array_equal(wm["conv1.weight"], wc["conv1.weight"]),
                  "--clip-grad-norm 1e-9: recorded, and the weights differ from the unclipped run's")
        emb = os.path.join(tmp, "max_pool_emb.safetensors")
        p = sieve("embed", "--run", run_m, "--images", os.path.join(data, "test"), "--out", emb, "--quiet")
        if check(p.returncode == 0, f"embed with a max-pool run: {p.stderr[-300:]}"):
            t, _ = read_safetensors(emb)
            check(t["embedding"].shape == (N_TEST, 32), f"32-dim embeddings: {t['embedding'].shape}")

    # Gray images: one input channel, the gray statistics.
    gray = os.path.join(tmp, "data_gray")
    shutil.copytree(data, gray)
    for d in ("train", "outside", "test"):
        for f in os.listdir(os.path.join(gray, d)):
            Image.open(os.path.join(gray, d, f)).convert("L").save(os.path.join(gray, d, f))
    run_g = os.path.join(tmp, "run_gray")
    # (with the thresholds chosen for the data folder's share of outside images: 8 of 48)
    p = sieve("train", "--data", gray, "--out", run_g, "--epochs", "1", "--distractor-share", "data", *net)
    if check(p.returncode == 0, "fast recipe on gray images exits 0"):
        cfg = json.load(open(os.path.join(run_g, "config.json")))
        cal = json.load(open(os.path.join(run_g, "calibration.json")))
        check(abs(cfg["distractor_share"] - 8 / 48) < 1e-12 and cal["distractor_share"] == cfg["distractor_share"]
              and "-1 thresholds for 16.6667% distractors" in p.stdout,
              f"--distractor-share data: 8 outside of 48 images: {cfg['distractor_share']} {p.stdout[-300:]}")
        g = np.concatenate([np.asarray(Image.open(os.path.join(gray, "train", f"{i}.png")), dtype=np.float64).ravel()
                            for i in labels]) / 255
        check(cfg["input"]["channels"] == 1 and abs(cfg["input"]["mean"][0] - g.mean()) < 1e-6
              and abs(cfg["input"]["std"][0] - g.std()) < 1e-6, f"gray: 1 channel, its mean/std: {cfg['input']}")
        w, _ = read_safetensors(os.path.join(run_g, "last", "model.safetensors"))
        check(w["conv1.weight"].shape == (4, 1, 3, 3), "gray: the stem takes one channel")
        sub = os.path.join(tmp, "gray_sub.csv")
        p = sieve("predict", "--run", run_g, "--data", gray, "--out", sub, "--quiet")
        check(p.returncode == 0 and "TTA flip-translate" in p.stdout,
              f"predict uses the run's flip-translate TTA by default: {p.stdout}")

    # --max-minutes: the whole command planned to its budget, the last planned step at lr 0.
    run_b = os.path.join(tmp, "run_budget")
    t0 = time.monotonic()
    p = sieve("train", "--data", data, "--out", run_b, "--max-minutes", "0.3", *net)
    secs = time.monotonic() - t0
    if check(p.returncode == 0, "budgeted run exits 0"):
        st = state(run_b)
        check(st.get("plan.budgeted") is True and st["step"] == st.get("plan.total_steps") and st["step"] > 20,
              f"the run took exactly its planned steps: {st['step']} of {st.get('plan.total_steps')}")
        # The plan is for what is left of the 18 s after reading the data, keeps the calibration's
        # reserve, and the command ends near its budget (a loaded machine may stretch the steps).
        b, pred = st["plan.budget_seconds"], st["plan.predicted_seconds"]
        check(12 <= b <= 18 and pred + st["plan.reserve_seconds"] + st["plan.margin_seconds"] <= b + 1e-9
              and st["plan.reserve_seconds"] > 0, f"the plan fits the budget: {b} s, predicted {pred} s")
        check(secs <= 18 + 20, f"train --max-minutes 0.3 took {secs:.1f} s (budget 18 s)")
        check(json.load(open(os.path.join(run_b, "config.json")))["budget_minutes"] == 0.3, "config records the budget")


def test_errors(tmp, data, full_run):
    def err(args, *needles, rc=1):
        """Usage errors (flags) exit 2, failures while running 1; either is one line without the
        library's [check failed: ...] suffix."""
        p = sieve(*args, expect=None)
        ok = (p.returncode == rc and all(n in p.stderr for n in needles) and "Traceback" not in p.stderr
              and "[check failed" not in p.stderr)
        check(ok, f"error for {' '.join(map(str, args))!r} mentions {needles}, exit {rc}: exit {p.returncode}, "
                  f"{p.stderr.strip()[-300:]}")

    out = os.path.join(tmp, "bad_run")
    err(["train", "--out", out], "--data", rc=2)
    err(["train", "--data", data], "--out", rc=2)
    err(["train", "--data", data, "--out", out, "--fit", "zoom"], "--fit", rc=2)
    err(["train", "--data", data, "--out", out, "--augment", "mixup"], "--augment", rc=2)
    err(["train", "--data", data, "--out", out, "--freeze", "all"], "--freeze", rc=2)
    err(["train", "--data", data, "--out", out, "--blocks", "1,0"], "--blocks", "'0'", rc=2)
    err(["train", "--data", data, "--out", out, "--blocks", "1,1,1,1,1"], "1 to 4", rc=2)
    err(["train", "--data", data, "--out", out, "--blocks", "one"], "--blocks", rc=2)
    err(["train", "--data", data, "--out", out, "--mean", "0.1", "0.2"], "--mean", "1 or 3", rc=2)
    err(["train", "--data", data, "--out", out, "--lr", "-1"], "--lr", rc=2)
    err(["train", "--data", data, "--out", out, "--epochs", "0"], "--epochs", rc=2)
    err(["train", "--data", data, "--out", out, "--distractor-share", "1.5"], "--distractor-share", "[0, 1]", rc=2)
    err(["train", "--data", data, "--out", out, "--arch", "cifar-resnet8", "--global-pool", "max"], "global_pool 'max'",
        "pool", rc=2)
    err(["train", "--data", data, "--out", out, "--distractor-share", "most"], "--distractor-share", "data, none", rc=2)
    err(["train", "--data", data, "--out", out, "--validate-every", "0"], "--validate-every", rc=2)
    err(["train", "--data", data, "--out", out, "--clip-grad-norm", "-1"], "--clip-grad-norm", rc=2)
    err(["train", "--data", data, "--out", out, "--recipe", "seed", "--validate-every", "2"], "validate_every=2",
        "early stopping", rc=2)
    err(["train", "--data", data, "--out", out, "--weights", os.path.join(tmp, "nope.safetensors")], "nope.safetensors")
    err(["train", "--data", os.path.join(tmp, "no_such_dir"), "--out", out], "no_such_dir")
    err(["train", "--data", data, "--out", full_run], "not empty", "--resume")
    err(["train", "--resume", full_run, "--lr", "0.1"], "--lr", "--resume", rc=2)
    err(["train", "--resume", os.path.join(tmp, "no_run")], "no_run")
    check(not os.path.exists(out) or not os.listdir(out), "failed runs leave no run folder behind")

    # Bad data: a corrupt image is named with its id when the loader reaches it.
    bad = os.path.join(tmp, "bad_data")
    shutil.copytree(data, bad)
    with open(os.path.join(bad, "train", "tr2_3.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\nthis is not a png")
    err(["train", "--data", bad, "--out", os.path.join(tmp, "bad_run2"), "--epochs", "1", *SMALL], "tr2_3")
    # A train.csv row without its image.
    bad2 = os.path.join(tmp, "bad_data2")
    shutil.copytree(data, bad2)
    os.remove(os.path.join(bad2, "train", "tr1_0.png"))
    err(["train", "--data", bad2, "--out", os.path.join(tmp, "bad_run3"), "--epochs", "1", *SMALL], "tr1_0")
    # One image per class: nothing can be held out.
    one = os.path.join(tmp, "one_each")
    os.makedirs(os.path.join(one, "train"))
    with open(os.path.join(one, "train.csv"), "w") as f:
        f.write("id,label\n")
        for ci in range(4):
            shutil.copy(os.path.join(data, "train", f"tr{ci}_0.png"), os.path.join(one, "train", f"a{ci}.png"))
            f.write(f"a{ci},{ci}\n")
    err(["train", "--data", one, "--out", os.path.join(tmp, "bad_run4"), *SMALL], "validation")


def main():
    if not os.access(EXE, os.X_OK):
        print(f"not an executable: {EXE}")
        return 1
    tmp = tempfile.mkdtemp(prefix="sieve_test_train_")
    try:
        data = os.path.join(tmp, "data")
        labels = make_data(data)
        full_run = test_fresh_run(tmp, data, labels)
        if full_run:
            test_resume_exact(tmp, data, full_run)
            test_cache_and_negatives(tmp, data, full_run)
            test_weights(tmp, data, full_run)
            test_fit_modes(tmp, data)
            test_fast_recipe(tmp, data, labels)
            test_errors(tmp, data, full_run)
    finally:
        if not os.environ.get("SIEVE_KEEP_TMP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("test_train: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
