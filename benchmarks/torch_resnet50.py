#!/usr/bin/python3
"""PyTorch side of bench_resnet50: torchvision resnet50 (1000 classes), 2 threads.

Same cases as benchmarks/bench_resnet50.cpp: eval = forward under no_grad in eval mode;
train = forward in train mode, BCE-with-logits, backward, plain SGD update, zero_grad.
Prints `case  ms/iter  images/s`. Usage: /usr/bin/python3 benchmarks/torch_resnet50.py [CASE ...]
[--channels-last] [--min-time SECONDS]
"""

import argparse
import time

import torch
import torchvision

CASES = ["eval/224/16", "eval/64/64", "eval/32/64", "train/224/16", "train/64/64", "train/32/64"]


def run(case, channels_last, min_time):
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
    lr = 1e-4

    def step():
        if not train:
            with torch.no_grad():
                model(x)
            return
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target)
        model.zero_grad(set_to_none=False)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p.sub_(lr * p.grad)

    step()  # warm-up, as the C++ benchmark
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            break
    ms = 1000 * elapsed / n
    print(f"{case:14s} {ms:10.1f} ms/iter {batch * n / elapsed:9.2f} images/s ({n} iterations)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=CASES)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    for c in args.cases:
        run(c, args.channels_last, args.min_time)


if __name__ == "__main__":
    main()
