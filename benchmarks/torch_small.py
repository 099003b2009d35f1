#!/usr/bin/python3
"""PyTorch side of bench_small: the small-image networks, 2 threads.

Same cases and networks as benchmarks/bench_small.cpp (`<mode>/<net>/<channels>x<size>/<batch>`):
basic-block ResNets with the CIFAR stem (torchvision's BasicBlock; resnet<depth>w<width>) and
PoolNet (poolnetw<width>: 3x3 conv-BN-ReLU stem, then per stage conv, 2x2 max pool, BN-ReLU,
conv-BN-ReLU; global average pool), each with a linear head over 8 classes + other.
eval = forward under no_grad in eval mode; train = forward in train mode, cross-entropy with
label smoothing 0.1, backward, Nesterov SGD step (momentum 0.9, weight decay 5e-4).
--channels-last runs model and input in NHWC (oneDNN's fast layout, as the fast peer
fmnist_d_fast_torch.py does). Prints `case  ms/iter  images/s (n iterations)` as
torch_resnet50.py, optionally the peak RSS.
Usage: /usr/bin/python3 benchmarks/torch_small.py [CASE ...] [--channels-last] [--min-time SECONDS] [--rss]
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock

from torch_timing import time_steps  # beside this script (its folder is on sys.path)

NETS = {  # name: (kind, blocks, width) as bench_small.cpp's kNets
    "poolnetw16": ("pool", [1, 1, 1], 16), "poolnetw24": ("pool", [1, 1, 1], 24),
    "resnet8w16": ("basic", [1, 1, 1], 16), "resnet8w32": ("basic", [1, 1, 1], 32),
    "resnet8w64": ("basic", [1, 1, 1], 64), "resnet10w16": ("basic", [1, 1, 1, 1], 16),
    "resnet10w24": ("basic", [1, 1, 1, 1], 24), "resnet10w32": ("basic", [1, 1, 1, 1], 32),
    "resnet14w32": ("basic", [2, 2, 2], 32), "resnet20w16": ("basic", [3, 3, 3], 16),
    "resnet18w64": ("basic", [2, 2, 2, 2], 64),
}
CLASSES = 9  # FMNIST-D: 8 known classes + other


def conv_bn(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def pool_net(blocks, width, cin):
    layers = conv_bn(cin, width)
    for s in range(1, len(blocks) + 1):
        a, b = width << (s - 1), width << s
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        layers += conv_bn(b, b)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width << len(blocks), CLASSES)]
    return nn.Sequential(*layers)


def basic_resnet(blocks, width, cin):
    layers = conv_bn(cin, width)
    inplanes = width
    for s, n in enumerate(blocks):
        planes = width << s
        for b in range(n):
            stride = 2 if (b == 0 and s > 0) else 1
            ds = None
            if stride != 1 or inplanes != planes:
                ds = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))
            layers.append(BasicBlock(inplanes, planes, stride, ds))
            inplanes = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(inplanes, CLASSES)]
    return nn.Sequential(*layers)


def cases():
    out = []
    for mode in ("train", "eval"):
        for net in NETS:
            for c, s in ((1, 28), (3, 32)):
                for b in (128, 512):
                    out.append(f"{mode}/{net}/{c}x{s}/{b}")
    return out



def run(case, channels_last, min_time, rss):
    mode, net, shape, batch = case.split("/")
    cin, size = (int(v) for v in shape.split("x"))
    batch = int(batch)
    kind, blocks, width = NETS[net]
    torch.manual_seed(0)
    model = (pool_net if kind == "pool" else basic_resnet)(blocks, width, cin)
    x = torch.randn(batch, cin, size, size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, CLASSES, (batch,))
    train = mode == "train"
    model.train(train)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4) if train else None

    def step():
        if not train:
            with torch.no_grad():
                model(x)
            return
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=False)  # keep the gradient buffers, as sieve does
        loss.backward()
        opt.step()

    time_steps(case, step, batch, min_time, rss, width=28)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--rss", action="store_true", help="append the process's peak RSS (MiB) to each line")
    args = ap.parse_args()
    known = cases()
    for c in args.cases:
        if c not in known:
            ap.error(f"unknown case {c!r}; e.g. {known[0]}")
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for c in args.cases or known:
        run(c, args.channels_last, args.min_time, args.rss)


if __name__ == "__main__":
    main()
