#!/usr/bin/python3
"""PyTorch side of bench_resnet50: torchvision resnet50 (1000 classes), 2 threads.

Same cases as benchmarks/bench_resnet50.cpp: eval = forward under no_grad in eval mode;
train = forward in train mode, BCE-with-logits, backward, AdamW step (lr 1e-4, weight decay
1e-4), zero_grad. Prints `case  ms/iter  images/s (n iterations)`; with --rss the line also ends
with the process's peak RSS so far (ru_maxrss: a high-water mark over every case this process
ran, so run one case per process for a per-case figure).
Usage: /usr/bin/python3 benchmarks/torch_resnet50.py [CASE ...] [--channels-last] [--min-time SECONDS] [--rss]
"""

import argparse

import torch
import torchvision

from torch_timing import time_steps  # beside this script (its folder is on sys.path)

CASES = ["eval/224/16", "eval/64/64", "eval/32/64", "train/224/16", "train/64/64", "train/32/64"]



def run(case, channels_last, min_time, rss):
    mode, size, batch = case.split("/")
    size, batch = int(size), int(batch)
    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    x = torch.randn(batch, 3, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    target = (torch.rand(batch, 1000) < 0.01).float()
    train = mode == "train"
    model.train(train)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-4) if train else None

    def step():
        if not train:
            with torch.no_grad():
                model(x)
            return
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        # Keep the gradient buffers alive (as sieve does) instead of reallocating each step.
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    time_steps(case, step, batch, min_time, rss, width=14)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=CASES)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--rss", action="store_true", help="append the process's peak RSS (MiB) to each line")
    args = ap.parse_args()
    for c in args.cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r}; known: {' '.join(CASES)}")
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    for c in args.cases:
        run(c, args.channels_last, args.min_time, args.rss)


if __name__ == "__main__":
    main()
