#!/usr/bin/python3
"""End-to-end parity of `sieve forward` with torchvision's resnet50 (PyTorch 1.13, CPU).

Usage: forward_e2e.py SIEVE_EXE [--size H W] [--batch N] [--classes K]

Random weights (and non-trivial BN statistics) for torchvision.models.resnet50(num_classes=K)
are saved through tools/safetensors_py.py; `sieve forward` runs on the same batch in eval mode
and in train mode, with a multi-hot target. Checked, as ||a-b|| / ||b||:
  eval, float32 vs torch float32: logits, embedding <= 1e-4; loss <= 1e-5; every gradient <= 1e-3
  train, --double vs torch float64: the same, plus BN running statistics <= 1e-5
  train, float32: logits, embedding, loss as above vs torch float32, or else (as gradients and
      running statistics always) against the float64 truth, no worse than 3x torch float32's
      own error there; the loss, one scalar, may instead equal the float64 BCE of sieve's own
      logits within 1e-5
      (train-mode BN over few values makes float32 gradients ill-conditioned: torch float32
      itself is ~2e-2 from float64 at batch 2, 64x64)
  num_batches_tracked exact.
Then torchvision's resnet50().load_state_dict(strict=True) must accept the state dict sieve
saved (--save-weights), holding the updated statistics.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import safetensors_py as stp  # noqa: E402

try:
    import torch
    import torchvision
except ImportError as e:  # meson treats 77 as "skipped"
    print(f"SKIP: {e} (install python3-torch and python3-torchvision)")
    sys.exit(77)


def rel(a, b):
    a = a.double()
    b = b.double()
    nb = b.norm().item()
    return (a - b).norm().item() / (nb if nb > 0 else 1.0)


class Checker:
    def __init__(self):
        self.failures = []
        self.lines = []

    def close(self, what, got, want, tol):
        r = rel(got, want)
        ok = r <= tol and got.shape == want.shape
        self.lines.append(f"{'ok ' if ok else 'BAD'} {what}: rel {r:.2e} (tol {tol:g})")
        if not ok:
            self.failures.append(f"{what}: rel {r:.3e} > {tol:g} or shape {tuple(got.shape)} != {tuple(want.shape)}")

    def equal(self, what, got, want):
        ok = bool(torch.equal(got, want))
        if not ok:
            self.failures.append(f"{what}: {got} != {want}")


def make_model(k, seed):
    torch.manual_seed(seed)
    m = torchvision.models.resnet50(num_classes=k)
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                # Non-trivial affine and running statistics, so eval mode tests them.
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.num_batches_tracked.fill_(11)
    return m


def run_sieve(exe, args):
    r = subprocess.run([exe, "forward"] + args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAIL: sieve forward {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    print(r.stdout.strip())


def torch_run(K, x, y, dtype, train):
    """torchvision's result: logits, embedding, loss, {param: grad}, {buffer: value}, model."""
    m = make_model(K, 1234).to(dtype)
    m.train(train)
    hold = {}
    m.fc.register_forward_hook(lambda mod, inp, out: hold.__setitem__("emb", inp[0].detach()))
    logits = m(x.to(dtype))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.to(dtype))
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    bufs = {n: b for n, b in m.named_buffers()}
    return logits.detach(), hold["emb"], loss.detach(), grads, bufs, m


def worst_rel(got, want, names):
    """(worst ||a-b||/||b|| over names, its name); missing names are reported as inf."""
    w = (0.0, "")
    for n in names:
        r = rel(got[n], want[n]) if n in got else float("inf")
        w = max(w, (r, n))
    return w


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sieve")
    ap.add_argument("--size", type=int, nargs=2, default=[64, 64])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--classes", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(2)
    N, K, (H, W) = a.batch, a.classes, a.size
    chk = Checker()
    with tempfile.TemporaryDirectory(prefix="sieve-forward-e2e-") as d:
        p = lambda n: os.path.join(d, n)  # noqa: E731
        stp.save(make_model(K, 1234).state_dict(), p("w.safetensors"))
        g = torch.Generator().manual_seed(99)
        x = torch.randn(N, 3, H, W, generator=g)
        y = (torch.rand(N, K, generator=g) < 0.4).float()
        stp.save({"input": x}, p("x.safetensors"))
        stp.save({"target": y}, p("t.safetensors"))
        base = ["--weights", p("w.safetensors"), "--input", p("x.safetensors"), "--target", p("t.safetensors")]

        # 1. Eval mode, float32 against torch float32: the tolerances.
        run_sieve(a.sieve, base + ["--out", p("eval.safetensors"), "--save-weights", p("saved_eval.safetensors")])
        out = stp.load_torch(p("eval.safetensors"))
        logits, emb, loss, grads, bufs, m_eval = torch_run(K, x, y, torch.float32, False)
        chk.close("eval logits", out["logits"], logits, 1e-4)
        chk.close("eval embedding", out["embedding"], emb, 1e-4)
        chk.close("eval loss", out["loss"], loss, 1e-5)
        gout = {n[5:]: v for n, v in out.items() if n.startswith("grad.")}
        r, n = worst_rel(gout, grads, grads)
        ok = r <= 1e-3 and len(gout) == len(grads)
        chk.lines.append(f"{'ok ' if ok else 'BAD'} eval {len(gout)}/{len(grads)} parameter gradients: worst rel {r:.2e} ({n}) (tol 1e-3)")
        if not ok:
            chk.failures.append(f"eval gradients: worst rel {r:.3e} ({n}), {len(gout)} of {len(grads)} present")
        if any(k.endswith("running_mean") for k in out):
            chk.failures.append("eval mode wrote running statistics")

        # 2. Train mode in float64 against torch float64: the tolerances, with the
        #    float32 rounding out of the way (batch statistics over N*H*W = 8 values in layer4
        #    make the float32 train-mode gradient ill-conditioned; see 3).
        run_sieve(a.sieve, base + ["--train", "--double", "--out", p("train64.safetensors")])
        o64 = stp.load_torch(p("train64.safetensors"))
        l64, e64, s64, g64, b64, _ = torch_run(K, x, y, torch.float64, True)
        chk.close("train/f64 logits", o64["logits"], l64, 1e-4)
        chk.close("train/f64 embedding", o64["embedding"], e64, 1e-4)
        chk.close("train/f64 loss", o64["loss"], s64, 1e-5)
        g = {n[5:]: v for n, v in o64.items() if n.startswith("grad.")}
        r, n = worst_rel(g, g64, g64)
        chk.lines.append(f"{'ok ' if r <= 1e-3 else 'BAD'} train/f64 {len(g)} parameter gradients: worst rel {r:.2e} ({n}) (tol 1e-3)")
        if r > 1e-3:
            chk.failures.append(f"train/f64 gradients: worst rel {r:.3e} ({n})")
        fl = [k for k in b64 if b64[k].dtype != torch.int64]
        r, n = worst_rel(o64, b64, fl)
        chk.lines.append(f"{'ok ' if r <= 1e-5 else 'BAD'} train/f64 {len(fl)} BN running statistics: worst rel {r:.2e} ({n}) (tol 1e-5)")
        if r > 1e-5:
            chk.failures.append(f"train/f64 running statistics: worst rel {r:.3e} ({n})")
        for k in b64:
            if b64[k].dtype == torch.int64:
                chk.equal(k, o64.get(k, torch.tensor(-1)), b64[k])

        # 3. Train mode in float32. Logits, embedding and loss within the tolerance of
        #    torch float32 or else, like gradients and running statistics, against the float64
        #    truth: as accurate as torch's own float32 result (within 3x of its error).
        run_sieve(a.sieve, base + ["--train", "--out", p("train32.safetensors"),
                                   "--save-weights", p("saved_train.safetensors")])
        o32 = stp.load_torch(p("train32.safetensors"))
        l32, e32, s32, g32, b32, m_train = torch_run(K, x, y, torch.float32, True)
        for what, got, t32, t64, tol in (("logits", o32["logits"], l32, l64, 1e-4),
                                         ("embedding", o32["embedding"], e32, e64, 1e-4),
                                         ("loss", o32["loss"], s32, s64, 1e-5)):
            rs, rt, rd = rel(got, t64), rel(t32, t64), rel(got, t32)
            ok = rd <= tol or rs <= max(tol, 3 * rt)
            extra = ""
            if what == "loss" and not ok:
                # A scalar's error is one draw of the rounding noise: torch's may cancel by luck.
                # The logits are checked above; here the loss must be the exact (float64) BCE of
                # sieve's own logits, so its computation, not the forward pass, is what is tested.
                exact = torch.nn.functional.binary_cross_entropy_with_logits(
                    o32["logits"].double(), y.double())
                rl = rel(got.double(), exact)
                ok = rl <= tol
                extra = f"; vs BCE of its own logits in float64 {rl:.2e} (tol {tol:g})"
            chk.lines.append(f"{'ok ' if ok else 'BAD'} train/f32 {what}: vs torch float32 {rd:.2e} (tol {tol:g}); "
                             f"vs float64 truth: sieve {rs:.2e}, torch float32 {rt:.2e}{extra}")
            if not ok:
                chk.failures.append(f"train/f32 {what}: {rd:.3e} from torch float32, {rs:.3e} from float64 "
                                    f"(torch float32 itself {rt:.3e})")
        g = {n[5:]: v for n, v in o32.items() if n.startswith("grad.")}
        rs, ns = worst_rel(g, g64, g64)
        rt, nt = worst_rel(g32, g64, g64)
        rd, nd = worst_rel(g, g32, g32)
        ok = rs <= max(1e-3, 3 * rt)
        chk.lines.append(f"{'ok ' if ok else 'BAD'} train/f32 gradients vs float64 truth: sieve worst rel {rs:.2e} ({ns}), "
                         f"torch float32 worst rel {rt:.2e} ({nt}); sieve vs torch float32 directly {rd:.2e} ({nd})")
        if not ok:
            chk.failures.append(f"train/f32 gradients: sieve {rs:.3e} vs torch's own float32 error {rt:.3e}")
        rs, ns = worst_rel(o32, b64, fl)
        rt, nt = worst_rel(b32, b64, fl)
        rd, nd = worst_rel(o32, b32, fl)
        ok = rs <= max(1e-5, 3 * rt)
        chk.lines.append(f"{'ok ' if ok else 'BAD'} train/f32 running statistics vs float64 truth: sieve worst rel {rs:.2e} ({ns}), "
                         f"torch float32 {rt:.2e} ({nt}); sieve vs torch float32 directly {rd:.2e} ({nd})")
        if not ok:
            chk.failures.append(f"train/f32 running statistics: sieve {rs:.3e} vs torch's own float32 error {rt:.3e}")
        for k in b32:
            if b32[k].dtype == torch.int64:
                chk.equal(k, o32.get(k, torch.tensor(-1)), b32[k])

        # 4. torchvision accepts sieve's saved state dicts (strict), in its own order, and they
        #    hold the weights after the step (running statistics updated in train mode).
        for mode, m in (("eval", m_eval), ("train", m_train)):
            saved = stp.load_torch(p(f"saved_{mode}.safetensors"))
            fresh = torchvision.models.resnet50(num_classes=K)
            fresh.load_state_dict(saved, strict=True)
            if list(saved) != list(fresh.state_dict()):
                chk.failures.append(f"{mode}: saved state dict order differs from torchvision's")
            sd = m.state_dict()
            tol = 1e-5 if mode == "eval" else max(1e-5, 3 * worst_rel(b32, b64, fl)[0])
            worst = max(rel(fresh.state_dict()[k], v) for k, v in sd.items() if v.dtype != torch.int64)
            nbt_ok = all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items() if v.dtype == torch.int64)
            ok = worst <= tol and nbt_ok
            chk.lines.append(f"{'ok ' if ok else 'BAD'} {mode}: torchvision resnet50(num_classes={K}).load_state_dict("
                             f"sieve's file, strict=True); worst rel vs torch's weights {worst:.2e}")
            if not ok:
                chk.failures.append(f"{mode}: saved weights differ from torch's after the step (rel {worst:.2e}, "
                                    f"num_batches_tracked equal: {nbt_ok})")

        # 5. Input errors are reported, not crashed on.
        stp.save({"input": torch.zeros(3, 64, 64)}, p("rank3.safetensors"))
        stp.save({"target": torch.zeros(N, K + 1)}, p("t_bad.safetensors"))
        for args, text in (
                (["--input", p("rank3.safetensors")], "tensor 'input' has shape [3, 64, 64] but rank 4 is required"),
                (["--input", p("t.safetensors")], "no tensor named 'input'"),
                (["--input", p("x.safetensors"), "--target", p("t_bad.safetensors")],
                 f"tensor 'target' has shape [{N}, {K + 1}] but the batch has N={N} and the head K={K}")):
            r = subprocess.run([a.sieve, "forward", "--weights", p("w.safetensors"), "--out", p("o.safetensors")] + args,
                               capture_output=True, text=True)
            ok = r.returncode == 1 and r.stderr.startswith("sieve: error: ") and text in r.stderr
            chk.lines.append(f"{'ok ' if ok else 'BAD'} error reported: {text}")
            if not ok:
                chk.failures.append(f"expected error '{text}', got rc={r.returncode} stderr={r.stderr!r}")

    print("\n".join(chk.lines))
    if chk.failures:
        print("FAILURES:\n  " + "\n  ".join(chk.failures), file=sys.stderr)
        return 1
    print(f"OK: sieve forward matches torchvision resnet50 (N={N}, {H}x{W}, K={K})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
