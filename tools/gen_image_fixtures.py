#!/usr/bin/python3
"""Generate torchvision-parity fixtures for sieve's image tests (tests/data/images/).

Run with Debian's interpreter (python3-torch 1.13, torchvision 0.14, PIL):
    /usr/bin/python3 tools/gen_image_fixtures.py [outdir]

Uint8 results are stored as PNG (lossless; sieve decodes them with its own PNG reader),
float results as raw little-endian float32 (.f32). fixtures.json lists every case.
Inputs are small seeded random images plus real images from Debian packages (SOURCES.md).
"""
import gzip
import json
import os
import shutil
import sys

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "images")
os.makedirs(OUT, exist_ok=True)
cases = []


def save_png(name, chw_uint8):
    arr = chw_uint8.permute(1, 2, 0).contiguous().numpy()
    Image.fromarray(arr, "RGB").save(os.path.join(OUT, name), optimize=True)
    return name


def save_f32(name, t):
    t.contiguous().numpy().astype("<f4").tofile(os.path.join(OUT, name))
    return name


def load_rgb_tensor(path):
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).contiguous()


rng = np.random.RandomState(20261127)
inputs = {}


def make_input(name, h, w, smooth=False):
    if smooth:  # smooth gradients + noise: closer to photos than white noise
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 / max(w - 1, 1)), (yy * 255 / max(h - 1, 1)), ((xx + yy) * 127 / max(h + w - 2, 1))], -1)
        arr = np.clip(base + rng.randint(-20, 21, size=(h, w, 3)), 0, 255).astype(np.uint8)
    else:
        arr = rng.randint(0, 256, size=(h, w, 3)).astype(np.uint8)
    Image.fromarray(arr, "RGB").save(os.path.join(OUT, name))
    inputs[name] = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    return name


make_input("in_37x53.png", 37, 53)
make_input("in_64x48.png", 64, 48, smooth=True)
make_input("in_9x7.png", 9, 7)

# Real images (see SOURCES.md): Fashion-MNIST samples and PNG/JPEG files from Debian packages.
with gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz", "rb") as f:
    raw = f.read()
for k in (0, 1):
    px = np.frombuffer(raw, dtype=np.uint8, offset=16 + k * 784, count=784).reshape(28, 28)
    name = f"fmnist_t10k_{k}.png"
    Image.fromarray(px, "L").save(os.path.join(OUT, name))
    inputs[name] = load_rgb_tensor(os.path.join(OUT, name))
shutil.copy("/usr/share/doc/libpng-dev/examples/pngtest.png", os.path.join(OUT, "pngtest_rgba.png"))
inputs["pngtest_rgba.png"] = load_rgb_tensor(os.path.join(OUT, "pngtest_rgba.png"))
shutil.copy("/usr/share/doc/nodejs/full-white-stripe.jpg", os.path.join(OUT, "nodejs_stripe.jpg"))
inputs["nodejs_stripe.jpg"] = load_rgb_tensor(os.path.join(OUT, "nodejs_stripe.jpg"))

# JPEG variants stb must read: progressive, gray, 4:2:0 chroma subsampling (PIL encoder).
src64 = Image.open(os.path.join(OUT, "in_64x48.png")).convert("RGB")
src64.save(os.path.join(OUT, "variant_progressive.jpg"), quality=90, progressive=True)
src64.convert("L").save(os.path.join(OUT, "variant_gray.jpg"), quality=90)
src64.save(os.path.join(OUT, "variant_420.jpg"), quality=90, subsampling=2)
src64.convert("LA").save(os.path.join(OUT, "variant_gray_alpha.png"))
for name in ("variant_progressive.jpg", "variant_gray.jpg", "variant_420.jpg", "variant_gray_alpha.png"):
    inputs[name] = load_rgb_tensor(os.path.join(OUT, name))

# Decode references (PIL): PNG must match exactly, JPEG within a tolerance (IDCTs differ).
for name in ("pngtest_rgba.png", "fmnist_t10k_0.png", "nodejs_stripe.jpg", "variant_progressive.jpg",
             "variant_gray.jpg", "variant_420.jpg", "variant_gray_alpha.png"):
    ref = save_png("decoded_" + os.path.splitext(name)[0] + ".png", inputs[name])
    cases.append({"op": "decode", "input": name, "expected": ref, "exact": name.endswith(".png")})

# Resize: both antialias modes, up and down, odd sizes, smaller-edge form.
resize_specs = [
    ("in_37x53.png", [20, 31]), ("in_37x53.png", [74, 100]), ("in_37x53.png", [13, 7]),
    ("in_64x48.png", [32, 24]), ("in_64x48.png", [17, 29]), ("in_64x48.png", 40), ("in_64x48.png", 100),
    ("in_9x7.png", [23, 31]), ("in_9x7.png", [3, 2]),
    ("fmnist_t10k_1.png", [224, 224]), ("fmnist_t10k_0.png", [11, 13]),
    ("pngtest_rgba.png", 32), ("nodejs_stripe.jpg", 64),
]
for src, size in resize_specs:
    for aa in (False, True):
        x = inputs[src].unsqueeze(0)
        y = F.resize(x, size, interpolation=F.InterpolationMode.BILINEAR, antialias=aa)[0]
        tag = "x".join(map(str, size)) if isinstance(size, list) else f"s{size}"
        ref = save_png(f"resize_{os.path.splitext(src)[0]}_{tag}_{'aa' if aa else 'plain'}.png", y)
        cases.append({"op": "resize", "input": src, "size": size, "antialias": aa, "expected": ref})

# Center crop: odd/even margins (Python round: half to even) and crops larger than the image.
for src, size in [("in_37x53.png", [20, 31]), ("in_37x53.png", [24, 24]), ("in_37x53.png", [36, 50]),
                  ("in_64x48.png", [33, 47]), ("in_9x7.png", [12, 10]), ("in_9x7.png", [4, 3])]:
    y = F.center_crop(inputs[src], size)
    ref = save_png(f"ccrop_{os.path.splitext(src)[0]}_{size[0]}x{size[1]}.png", y)
    cases.append({"op": "center_crop", "input": src, "size": size, "expected": ref})

# Flip, grayscale, colour adjustments (uint8 tensor semantics).
for src in ("in_37x53.png", "pngtest_rgba.png"):
    stem = os.path.splitext(src)[0]
    cases.append({"op": "hflip", "input": src, "expected": save_png(f"hflip_{stem}.png", F.hflip(inputs[src]))})
    cases.append({"op": "grayscale3", "input": src,
                  "expected": save_png(f"gray_{stem}.png", F.rgb_to_grayscale(inputs[src], num_output_channels=3))})
    for fn, name in ((F.adjust_brightness, "brightness"), (F.adjust_contrast, "contrast"),
                     (F.adjust_saturation, "saturation")):
        for factor in (0.6, 1.37):
            y = fn(inputs[src], factor)
            ref = save_png(f"{name}_{factor}_{stem}.png", y)
            cases.append({"op": name, "factor": factor, "input": src, "expected": ref})

# ToTensor + Normalize (float32 CHW).
mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
for src in ("in_9x7.png", "fmnist_t10k_0.png"):
    stem = os.path.splitext(src)[0]
    t = inputs[src].float().div(255)
    cases.append({"op": "to_tensor", "input": src, "expected": save_f32(f"totensor_{stem}.f32", t),
                  "shape": list(t.shape)})
    n = F.normalize(t, mean, std)
    cases.append({"op": "normalize", "input": src, "mean": mean, "std": std,
                  "expected": save_f32(f"normalize_{stem}.f32", n), "shape": list(n.shape)})

with open(os.path.join(OUT, "fixtures.json"), "w") as f:
    json.dump({"generator": "tools/gen_image_fixtures.py", "torch": torch.__version__,
               "torchvision": torchvision.__version__, "cases": cases}, f, indent=1)
print(f"{len(cases)} cases written to {OUT}")

# ---------------------------------------------------------------------------------------------
# Bad-file corpus (tests/data/bad/): every file must give a clear sieve::Error, never a crash.
import io
import struct
import zlib

BAD = os.path.join(os.path.dirname(OUT.rstrip("/")), "bad")
os.makedirs(BAD, exist_ok=True)


def wbad(name, data):
    with open(os.path.join(BAD, name), "wb") as f:
        f.write(data)


def small_jpeg(progressive=False):
    buf = io.BytesIO()
    arr = np.array(Image.open(os.path.join(OUT, "in_64x48.png")))[:16, :16]
    Image.fromarray(arr).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def png_bytes(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def jpeg_segments(data):
    """Split a JPEG into (marker, payload-with-length) up to SOS, plus the rest from SOS."""
    segs, p = [], 2
    while True:
        m = data[p + 1]
        ln = struct.unpack(">H", data[p + 2:p + 4])[0]
        if m == 0xDA:
            return segs, data[p:]
        segs.append((m, data[p:p + 2 + ln]))
        p += 2 + ln


def png_chunk(ctype, payload):
    return struct.pack(">I", len(payload)) + ctype + payload + struct.pack(">I", zlib.crc32(ctype + payload) & 0xFFFFFFFF)


jpg = small_jpeg()
png = png_bytes(np.array(Image.open(os.path.join(OUT, "in_37x53.png"))))
wbad("truncated.jpg", jpg[: len(jpg) * 6 // 10])
wbad("truncated_header.jpg", jpg[:40])
wbad("truncated.png", png[: len(png) * 6 // 10])
bad_crc = bytearray(png)
bad_crc[60] ^= 0x55  # inside the IDAT payload: its CRC no longer matches
wbad("bad_crc.png", bytes(bad_crc))
wbad("empty.jpg", b"")
wbad("random.jpg", np.random.RandomState(7).randint(0, 256, 1000).astype(np.uint8).tobytes())
wbad("random_after_soi.jpg", b"\xff\xd8\xff" + np.random.RandomState(8).randint(0, 256, 500).astype(np.uint8).tobytes())
ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
wbad("huge_dims.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
     png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
segs, rest = jpeg_segments(jpg)
sof = [s for m, s in segs if m == 0xC0][0]
huge_sof = sof[:5] + struct.pack(">HH", 65000, 65000) + sof[9:]
wbad("huge_dims.jpg", b"\xff\xd8" + b"".join(huge_sof if m == 0xC0 else s for m, s in segs) + rest)

# Corrupt Huffman table: a DHT whose code lengths over-subscribe the code space (3 codes of length 1).
def dht(tc, th, counts, values):
    body = bytes([tc << 4 | th]) + bytes(counts) + bytes(values)
    return b"\xff\xc4" + struct.pack(">H", 2 + len(body)) + body


def with_extra_dht(extra):
    return b"\xff\xd8" + b"".join(s for _, s in segs) + extra + rest


wbad("corrupt_huffman.jpg", with_extra_dht(dht(1, 0, [3] + [0] * 15, [0, 1, 2])))
# CVE-2022-28042 (stb issue #1289): code counts summing to 654 > 256 overrun the 256-entry
# values[] and 257-entry size[] arrays of stbi__huffman; later symbol ids index out of bounds.
counts = [0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 99, 99, 99, 99, 255]
wbad("cve_2022_28042_dht_overflow.jpg", with_extra_dht(dht(0, 0, counts, [5] * sum(counts))))
# CVE-2022-28041 (stb issues #1292/#1289 family): a DC table whose symbols exceed 15 makes
# stbi__extend_receive index stbi__bmask/jbias out of bounds, and a scan may use a Huffman
# table no DHT ever defined (stb's decoder struct is malloc'ed, so it reads stale heap bytes).
wbad("cve_2022_28041_dc_symbol.jpg", with_extra_dht(dht(0, 0, [0, 1] + [0] * 14, [200])))
sos = bytearray(rest)
ns = sos[4]
for c in range(ns):
    sos[6 + 2 * c] = 0x33  # every component: DC table 3, AC table 3 (never defined)
wbad("cve_2022_28041_undefined_table.jpg", b"\xff\xd8" + b"".join(s for _, s in segs) + bytes(sos))

# Other formats renamed .jpg (the decoder must say which format it is and refuse it).
for fmt, name in (("GIF", "gif_renamed.jpg"), ("BMP", "bmp_renamed.jpg")):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, fmt)
    wbad(name, buf.getvalue())
wbad("psd_renamed.jpg", b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, 8, 8, 8, 3) + b"\x00" * 64)
wbad("hdr_renamed.jpg", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 8 +X 8\n" + b"\x80" * 256)
print(f"bad corpus written to {BAD}")

# Benchmark input (benchmarks/bench_images.cpp and benchmarks/torch_images.py): a 500x375
# baseline JPEG built from the Debian images above (upscaled stripe blended with the smooth
# synthetic image), PIL quality 90, 4:2:0.
stripe = Image.open(os.path.join(OUT, "nodejs_stripe.jpg")).convert("RGB").resize((500, 375), Image.BILINEAR)
smooth = Image.open(os.path.join(OUT, "in_64x48.png")).convert("RGB").resize((500, 375), Image.BICUBIC)
Image.blend(stripe, smooth, 0.5).save(os.path.join(OUT, "bench_500x375.jpg"), quality=90)


# Fuzz seed: a structurally valid gray baseline JPEG whose DC differences all push the same way
# (4224 blocks x +2047, quantiser 255), so stb 2.27 overflows `dc * dequant[0]` (signed int UB,
# memory-safe; see tools/fuzz.sh). Keeps the fuzzer honest about that known residual.
def seg(m, body):
    return b"\xff" + bytes([m]) + struct.pack(">H", len(body) + 2) + body


bits = ("0" + "1" * 11 + "0") * (128 * 33)  # DC category 11 (+2047), then EOB
bits += "1" * ((8 - len(bits) % 8) % 8)
scan = bytearray()
for i in range(0, len(bits), 8):
    scan.append(int(bits[i:i + 8], 2))
    if scan[-1] == 0xFF:
        scan.append(0)
FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "corpus", "decode_image")
os.makedirs(FUZZ, exist_ok=True)
with open(os.path.join(FUZZ, "dc_overflow.jpg"), "wb") as f:
    f.write(b"\xff\xd8" + seg(0xDB, bytes([0, 255] + [1] * 63)) +
            seg(0xC0, bytes([8]) + struct.pack(">HH", 264, 1024) + bytes([1, 1, 0x11, 0])) +
            seg(0xC4, bytes([0x00, 1, 1] + [0] * 14 + [11, 0])) + seg(0xC4, bytes([0x10, 1, 1] + [0] * 14 + [0, 1])) +
            seg(0xDA, bytes([1, 1, 0x00, 0, 63, 0])) + bytes(scan) + b"\xff\xd9")
