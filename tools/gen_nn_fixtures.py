#!/usr/bin/python3
"""PyTorch parity fixtures for sieve's ResNet (run with Debian's /usr/bin/python3 + torch).

Small fixture (committed, tests/data/nn/small_resnet.safetensors):
    /usr/bin/python3 tools/gen_nn_fixtures.py --small tests/data/nn/small_resnet.safetensors
  A torchvision-style ResNet built from torchvision's own Bottleneck blocks, blocks [1,1,1,1],
  stem width 4 (embedding 128), 5 classes, computed in float64 from float32-representable
  weights and inputs, so sieve's double build must match to ~1e-12 and its float build to ~1e-5.
Small basic-block fixtures (committed, tests/data/nn/small_basic_{gray,rgb}.safetensors):
    /usr/bin/python3 tools/gen_nn_fixtures.py --small-basic tests/data/nn/small_basic_gray.safetensors
    /usr/bin/python3 tools/gen_nn_fixtures.py --small-basic tests/data/nn/small_basic_rgb.safetensors \
        --in-channels 3 --blocks 2,2
  The same SmallResNet layout built from torchvision's own BasicBlock with the CIFAR stem
  (conv1 3x3/1 pad 1, bn1, relu, no max pool), width 4; gray: blocks [1,1,1], 1 input channel,
  12x12 and 11x13 images; rgb: blocks [2,2], 3 channels, 10x10 and 9x12. Float64, as above.
Small PoolNet fixture (committed, tests/data/nn/small_pool_net.safetensors):
    /usr/bin/python3 tools/gen_nn_fixtures.py --pool-net tests/data/nn/small_pool_net.safetensors
  sieve's nn::PoolNet layout (conv1 3x3, bn1, relu; per stage conv1 3x3, max pool 2x2/2, bn1,
  relu, conv2 3x3, bn2, relu; global average pool), width 4, 2 stages, 1 input channel,
  12x12 and 11x13 images (the odd sides exercise the pool's floor). Float64, as above.
ResNet50 fixture (generated at test time by the e2e suite, never committed):
    /usr/bin/python3 tools/gen_nn_fixtures.py --resnet50 OUT.safetensors
  torchvision.models.resnet50() with random weights (seeded), batch 2, 3x64x64 and 3x48x80,
  computed in float64 (default) from float32-representable weights, so the reference is the
  exact answer; --dtype float32 gives PyTorch's own float32 result instead.

File layout (names): the model's state_dict under torchvision's names; `input.<case>`,
`target.<case>`; for mode in {eval, train}: `<mode>.<case>.logits`, `<mode>.<case>.embedding`,
`<mode>.<case>.loss` (BCE-with-logits, mean), `<mode>.<case>.grad.<param>` (first case only;
F32 for ResNet50); after the train step,
`train.<case>.buffer.<name>` holds every updated running statistic and num_batches_tracked.
Metadata: blocks, width, classes, cases, grad_cases, grad_modes, versions; the basic-block
fixtures add in_channels, block (basic) and stem (cifar).
"""

import argparse
import os
import sys

import torch
import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_py as stp  # noqa: E402


class SmallResNet(nn.Module):
    """torchvision's ResNet layout (same attribute names) with a configurable stem width, block
    (Bottleneck or BasicBlock), input channels and stem (cifar: conv1 3x3/1, no max pool)."""

    def __init__(self, blocks, width, classes, block=Bottleneck, in_channels=3, cifar=False):
        super().__init__()
        if cifar:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        for s, n in enumerate(blocks):
            planes = width << s
            layer = []
            for b in range(n):
                stride = 2 if (b == 0 and s > 0) else 1
                ds = None
                if stride != 1 or inplanes != planes * block.expansion:
                    ds = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
                layer.append(block(inplanes, planes, stride, ds))
                inplanes = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.nstages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(self.nstages):
            x = getattr(self, f"layer{s + 1}")(x)
        emb = torch.flatten(self.avgpool(x), 1)
        return self.fc(emb), emb


class PoolStage(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.bn1(nn.functional.max_pool2d(self.conv1(x), 2)))
        return torch.relu(self.bn2(self.conv2(x)))


class SmallPoolNet(nn.Module):
    """sieve's nn::PoolNet under the same names: the stem at full size, then stages that widen
    before they pool."""

    def __init__(self, stages, width, classes, in_channels=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        for s in range(1, stages + 1):
            setattr(self, f"layer{s}", PoolStage(width << (s - 1), width << s))
        self.nstages = stages
        self.fc = nn.Linear(width << stages, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        for s in range(1, self.nstages + 1):
            x = getattr(self, f"layer{s}")(x)
        emb = x.mean(dim=(2, 3))
        return self.fc(emb), emb


def torchvision_forward(model):
    def fwd(x):
        m = model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        emb = torch.flatten(m.avgpool(x), 1)
        return m.fc(emb), emb
    return fwd


def perturb_bn(model, gen):
    """Non-trivial BN affine parameters and running statistics (eval mode then matters)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(1 + 0.2 * torch.randn(c, generator=gen))
                mod.bias.copy_(0.2 * torch.randn(c, generator=gen))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                mod.running_var.copy_(0.75 + 0.5 * torch.rand(c, generator=gen))
                mod.num_batches_tracked.fill_(3)


def build(model, fwd, cases, classes, gen, dtype, grads_in, grad_cases, grad_store=None):
    out = {}
    # Round every float to float32 first: the file stores F32 weights, and sieve loads exactly these.
    with torch.no_grad():
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.copy_(t.float().to(t.dtype))
    for k, v in model.state_dict().items():
        out[k] = v.float() if v.is_floating_point() else v.clone()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.to(dtype)
    for case, shape in cases.items():
        x = torch.randn(shape, generator=gen).float()
        t = (torch.rand((shape[0], classes), generator=gen) < 0.4).float()
        out[f"input.{case}"] = x
        out[f"target.{case}"] = t
        for mode in ("eval", "train"):
            model.load_state_dict(initial)  # every case starts from the same weights and stats
            model.train(mode == "train")
            model.zero_grad()
            logits, emb = fwd(x.to(dtype))
            loss = nn.functional.binary_cross_entropy_with_logits(logits, t.to(dtype))
            out[f"{mode}.{case}.logits"] = logits.detach().clone()
            out[f"{mode}.{case}.embedding"] = emb.detach().clone()
            out[f"{mode}.{case}.loss"] = loss.detach().reshape([]).clone()
            if mode in grads_in and case in grad_cases:
                loss.backward()
                for name, p in model.named_parameters():
                    g = p.grad.detach().clone()
                    out[f"{mode}.{case}.grad.{name}"] = g.to(grad_store) if grad_store else g
            if mode == "train":
                for name, b in model.named_buffers():
                    out[f"train.{case}.buffer.{name}"] = b.detach().clone()
    model.load_state_dict(initial)
    return out


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--small", metavar="OUT")
    g.add_argument("--small-basic", metavar="OUT")
    g.add_argument("--pool-net", metavar="OUT")
    g.add_argument("--resnet50", metavar="OUT")
    ap.add_argument("--in-channels", type=int, default=1, help="--small-basic: input channels (1 or 3)")
    ap.add_argument("--blocks", default="1,1,1", help="--small-basic: blocks per stage")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="precision of the ResNet50 reference computation (weights are always F32)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    torch.set_num_threads(2)
    if args.small:
        blocks, width, classes = [1, 1, 1, 1], 4, 5
        model = SmallResNet(blocks, width, classes)
        perturb_bn(model, gen)
        cases = {"a": (2, 3, 32, 40), "b": (3, 3, 33, 29)}
        out = build(model, model.forward, cases, classes, gen, torch.float64, ("eval", "train"), ("a",))
        path = args.small
    elif args.small_basic:
        blocks, width, classes = [int(b) for b in args.blocks.split(",")], 4, 5
        ch = args.in_channels
        model = SmallResNet(blocks, width, classes, BasicBlock, ch, cifar=True)
        perturb_bn(model, gen)
        cases = {"a": (2, ch, 12, 12), "b": (3, ch, 11, 13)} if ch == 1 else {"a": (2, ch, 10, 10), "b": (3, ch, 9, 12)}
        out = build(model, model.forward, cases, classes, gen, torch.float64, ("eval", "train"), ("a",))
        path = args.small_basic
    elif args.pool_net:
        blocks, width, classes = [1, 1], 4, 5
        model = SmallPoolNet(len(blocks), width, classes)
        perturb_bn(model, gen)
        cases = {"a": (2, 1, 12, 12), "b": (3, 1, 11, 13)}
        out = build(model, model.forward, cases, classes, gen, torch.float64, ("eval", "train"), ("a",))
        path = args.pool_net
    else:
        blocks, width, classes = [3, 4, 6, 3], 64, 7
        model = torchvision.models.resnet50(num_classes=classes)
        perturb_bn(model, gen)
        cases = {"sq": (2, 3, 64, 64), "rect": (2, 3, 48, 80)}
        dtype = torch.float64 if args.dtype == "float64" else torch.float32
        # Gradients stored as F32 keep the file near 300 MB (relative rounding 6e-8).
        out = build(model, torchvision_forward(model), cases, classes, gen, dtype, ("eval", "train"), ("sq",),
                    torch.float32)
        path = args.resnet50
    meta = {"blocks": ",".join(map(str, blocks)), "width": str(width), "classes": str(classes),
            "cases": ",".join(cases), "grad_cases": "sq" if args.resnet50 else "a",
            "grad_modes": "eval,train", "generator": "tools/gen_nn_fixtures.py",
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    if args.small_basic:
        meta.update({"in_channels": str(args.in_channels), "block": "basic", "stem": "cifar"})
    if args.pool_net:
        meta.update({"in_channels": "1", "block": "pool", "stem": "cifar"})
    tmp = path + ".tmp"
    stp.save(out, tmp, metadata=meta)
    os.replace(tmp, path)
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
