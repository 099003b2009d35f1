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
  With --global-max (tests/data/nn/small_pool_net_max.safetensors) the embedding is the global
  max pool instead.
ResNet50 fixture (generated at test time by the e2e suite, never committed):
    /usr/bin/python3 tools/gen_nn_fixtures.py --resnet50 OUT.safetensors
  torchvision.models.resnet50() with random weights (seeded), batch 2, 3x64x64 and 3x48x80,
  computed in float64 (default) from float32-representable weights, so the reference is the
  exact answer; --dtype float32 gives PyTorch's own float32 result instead.
ResNet50 train-mode gradient accuracy fixture (generated at test time, never committed):
    /usr/bin/python3 tools/gen_nn_fixtures.py --resnet50-grads OUT.safetensors
  torchvision.models.resnet50(num_classes=7), train mode, BCE on multi-hot targets, on inputs
  whose layer4 plane is 1x1 (batch 8, 32x32), 2x2 (batch 3, 64x64) and 3x3 (batch 3, 80x96),
  with every ReLU input and the stem pool's runner-ups kept clear of float32's forward error
  (see RESNET50_GRADS_BN_SHIFT; margins in `margin.<case>.relu` / `.pool`). Per case: the
  float64 truth of every parameter gradient (`train.<case>.grad.<param>`) and of every block's
  input gradient (`train.<case>.dinput.<block>`, e.g. `layer4.2`, NCHW), both stored as F32,
  and PyTorch float32's relative L2 distance to that truth, computed here in float64 from the
  unrounded values (`torch32.<case>.grad.<param>`, `torch32.<case>.dinput.<block>`, F64
  scalars), so a test can hold sieve's float build to PyTorch float32's own accuracy per tensor.

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

    def __init__(self, stages, width, classes, in_channels=1, global_max=False):
        super().__init__()
        self.global_max = global_max
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
        emb = nn.functional.adaptive_max_pool2d(x, 1).flatten(1) if self.global_max else x.mean(dim=(2, 3))
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


def block_input_grads(model, x, t):
    """Train-mode forward + BCE + backward of a torchvision ResNet from x; returns the parameter
    gradients and the gradient with respect to every block's input, by name."""
    inputs = {}
    hooks = []
    for lname in ("layer1", "layer2", "layer3", "layer4"):
        for i, blk in enumerate(getattr(model, lname)):
            def pre(mod, args, key=f"{lname}.{i}"):
                args[0].retain_grad()
                inputs[key] = args[0]
            hooks.append(blk.register_forward_pre_hook(pre))
    model.train(True)
    model.zero_grad()
    logits, _ = torchvision_forward(model)(x)
    nn.functional.binary_cross_entropy_with_logits(logits, t).backward()
    for h in hooks:
        h.remove()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    dinputs = {k: v.grad.detach().clone() for k, v in inputs.items()}
    return grads, dinputs


def pool_margin(model, x):
    """The stem max pool's closest call, relative to its largest input: min over windows of
    (largest - second largest) / max |input| (train-mode stem, float64)."""
    with torch.no_grad():
        model.train(True)
        h = model.relu(model.bn1(model.conv1(x)))
        padded = nn.functional.pad(h, (1, 1, 1, 1), value=-float("inf"))
        cols = nn.functional.unfold(padded, 3, stride=2).reshape(h.shape[0], h.shape[1], 9, -1)
        top = cols.topk(2, dim=2).values
        return ((top[:, :, 0] - top[:, :, 1]).min() / h.abs().max()).item()


def relu_margin(model, x):
    """The closest ReLU call of a train-mode forward: min over ReLU inputs of |v| / max |v| of
    that call (float64)."""
    worst = [float("inf")]

    def hook(mod, args):
        v = args[0]
        worst[0] = min(worst[0], (v.abs().min() / v.abs().max()).item())
    relus = [model.relu] + [b.relu for lname in ("layer1", "layer2", "layer3", "layer4")
                            for b in getattr(model, lname)]
    hooks = [r.register_forward_pre_hook(hook) for r in relus]
    with torch.no_grad():
        model.train(True)
        torchvision_forward(model)(x)
    for h in hooks:
        h.remove()
    return worst[0]


# Kinks (a ReLU input or a max-pool runner-up within float32's forward error) make float32
# gradients a coin toss: one element on the other side of a ReLU moves whole tensors by 1e-2
# in either implementation (issue 24's layer4 finding was one such decision; see
# test_parity.cpp). The accuracy fixture keeps every ReLU input away from zero: BN biases
# raised by RESNET50_GRADS_BN_SHIFT (past the few-sigma range of normalised values), checked by
# relu_margin; and it draws each case's input until the stem's max pool has a clear winner in
# every window (pool_margin >= RESNET50_GRADS_POOL_MARGIN), keeping the best of a few draws;
# the test checks the stem's gradients only where that margin was reached. Float32's forward
# error is about 5e-5 of the norm at layer4 and 2e-7 of the largest value at the stem's pool
# (measured 2026-12-07), so both margins are 10-20x the error they guard against.
RESNET50_GRADS_BN_SHIFT = 6.0
RESNET50_GRADS_RELU_MARGIN = 1e-3
RESNET50_GRADS_POOL_MARGIN = 2e-6
RESNET50_GRADS_DRAWS = 16


def resnet50_grads(gen):
    """The --resnet50-grads fixture (see the module docstring)."""
    classes = 7
    model = torchvision.models.resnet50(num_classes=classes)
    perturb_bn(model, gen)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.bias.add_(RESNET50_GRADS_BN_SHIFT)
        for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
            t.copy_(t.float().to(t.dtype))
    out = {k: (v.float() if v.is_floating_point() else v.clone()) for k, v in model.state_dict().items()}
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cases = {"p1": (8, 3, 32, 32), "p2": (3, 3, 64, 64), "p3": (3, 3, 80, 96)}

    def rel(a, b):
        b = b.double()
        return ((a.double() - b).norm() / b.norm()).reshape([])

    for case, shape in cases.items():
        model.to(torch.float64)
        model.load_state_dict(initial)
        # Draws by the stem's pool margin (cheap), best first; the first whose ReLUs are clear wins.
        draws = [torch.randn(shape, generator=gen).float() for _ in range(RESNET50_GRADS_DRAWS)]
        ranked = sorted(((pool_margin(model, x.double()), i) for i, x in enumerate(draws)), reverse=True)
        best = None
        for pm, i in ranked:
            rm = relu_margin(model, draws[i].double())
            if rm >= RESNET50_GRADS_RELU_MARGIN:
                best = (draws[i], pm, rm)
                break
        if best is None:
            raise SystemExit(f"--resnet50-grads: case {case}: no input of {RESNET50_GRADS_DRAWS} drawn keeps every "
                             f"ReLU input {RESNET50_GRADS_RELU_MARGIN} of its call's largest from zero; raise "
                             "RESNET50_GRADS_BN_SHIFT")
        x, pmargin, rmargin = best
        t = (torch.rand((shape[0], classes), generator=gen) < 0.4).float()
        out[f"input.{case}"] = x
        out[f"target.{case}"] = t
        out[f"margin.{case}.relu"] = torch.tensor(rmargin, dtype=torch.float64)
        out[f"margin.{case}.pool"] = torch.tensor(pmargin, dtype=torch.float64)
        runs = {}
        for dtype in (torch.float64, torch.float32):
            model.to(dtype)
            model.load_state_dict(initial)  # same weights and statistics for both precisions
            runs[dtype] = block_input_grads(model, x.to(dtype), t.to(dtype))
        (g64, d64), (g32, d32) = runs[torch.float64], runs[torch.float32]
        for n, g in g64.items():
            out[f"train.{case}.grad.{n}"] = g.float()
            out[f"torch32.{case}.grad.{n}"] = rel(g32[n], g)
        for n, d in d64.items():
            out[f"train.{case}.dinput.{n}"] = d.float()
            out[f"torch32.{case}.dinput.{n}"] = rel(d32[n], d)
        print(f"case {case} {tuple(shape)}: relu margin {rmargin:.2e}, pool margin {pmargin:.2e}")
    model.load_state_dict(initial)
    return out, cases, classes


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--small", metavar="OUT")
    g.add_argument("--small-basic", metavar="OUT")
    g.add_argument("--pool-net", metavar="OUT")
    g.add_argument("--resnet50", metavar="OUT")
    g.add_argument("--resnet50-grads", metavar="OUT")
    ap.add_argument("--global-max", action="store_true", help="--pool-net: global max pool (else average)")
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
        model = SmallPoolNet(len(blocks), width, classes, global_max=args.global_max)
        perturb_bn(model, gen)
        cases = {"a": (2, 1, 12, 12), "b": (3, 1, 11, 13)}
        out = build(model, model.forward, cases, classes, gen, torch.float64, ("eval", "train"), ("a",))
        path = args.pool_net
    elif args.resnet50_grads:
        blocks, width = [3, 4, 6, 3], 64
        out, cases, classes = resnet50_grads(gen)
        path = args.resnet50_grads
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
            "cases": ",".join(cases),
            "grad_cases": "sq" if args.resnet50 else ",".join(cases) if args.resnet50_grads else "a",
            "grad_modes": "train" if args.resnet50_grads else "eval,train", "generator": "tools/gen_nn_fixtures.py",
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    if args.small_basic:
        meta.update({"in_channels": str(args.in_channels), "block": "basic", "stem": "cifar"})
    if args.resnet50_grads:
        meta["pool_margin_min"] = repr(RESNET50_GRADS_POOL_MARGIN)
    if args.pool_net:
        meta.update({"in_channels": "1", "block": "pool", "stem": "cifar",
                     "global_pool": "max" if args.global_max else "avg"})
    tmp = path + ".tmp"
    stp.save(out, tmp, metadata=meta)
    os.replace(tmp, path)
    print(f"wrote {path}: {len(out)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
