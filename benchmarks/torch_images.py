#!/usr/bin/python3
"""The operations of benchmarks/bench_images.cpp through PIL/torchvision, for side-by-side ratios.

Run with Debian's interpreter: /usr/bin/python3 benchmarks/torch_images.py
Prints wall and CPU microseconds per item (decode, chain) and images/s (loader, wall clock),
best of several repeats.
"""
import io
import os
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image

DATA = os.environ.get("SIEVE_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "images"))
torch.set_num_threads(1)


def best_us(fn, n, repeats=5):
    """Best (wall, cpu) microseconds per call over `repeats` runs of n calls."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall = min(wall, (time.perf_counter() - t0) / n)
        cpu = min(cpu, (time.process_time() - c0) / n)
    return f"wall {wall * 1e6:.1f} cpu {cpu * 1e6:.1f}"


def decode(data):
    return lambda: Image.open(io.BytesIO(data)).convert("RGB").load()


png = open(os.path.join(DATA, "fmnist_t10k_0.png"), "rb").read()
jpg = open(os.path.join(DATA, "bench_500x375.jpg"), "rb").read()
chain = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(),
                   T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
img = Image.open(io.BytesIO(jpg)).convert("RGB")

print(f"decode_png_28x28_us {best_us(decode(png), 2000)}")
print(f"decode_jpeg_500x375_us {best_us(decode(jpg), 200)}")
print(f"train_chain_224_us {best_us(lambda: chain(img), 100)}")


class Files(torch.utils.data.Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        with open(os.path.join(DATA, "bench_500x375.jpg"), "rb") as f:
            x = Image.open(f).convert("RGB")
        return chain(x), i % 10


for workers in (1, 2):
    loader = torch.utils.data.DataLoader(Files(), batch_size=32, shuffle=True, num_workers=workers)
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(len(y) for _, y in loader)
        best = max(best, n / (time.perf_counter() - t0))
    print(f"loader_{workers}_workers_images_per_s {best:.0f}")
sys.stdout.flush()
