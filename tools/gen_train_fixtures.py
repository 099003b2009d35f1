#!/usr/bin/python3
"""Golden values for sieve's training machinery (losses, optimizers, LR schedules) from
torch 1.13. Run with Debian's python3-torch:  /usr/bin/python3 tools/gen_train_fixtures.py
Writes tests/data/train/fixtures.json (small; committed). Every float is a float32 value
printed as the shortest decimal that round-trips through double, so C++ reads it exactly."""
import json, math, os, sys
import torch

torch.manual_seed(1234)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'data', 'train', 'fixtures.json')

def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]

fx = {'torch_version': torch.__version__}

# ---- BCE with logits: extremes, zero, an all-zero target row (distractor as negative) ----
N, K = 4, 5
x = torch.randn(N, K) * 3
x[0, 0], x[0, 1], x[0, 2], x[1, 3] = 40.0, -40.0, 0.0, -17.0
y = (torch.rand(N, K) > 0.5).float()
y[2].zero_()
pw = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0])
bce = {'N': N, 'K': K, 'x': flat(x), 'y': flat(y), 'pos_weight': flat(pw)}
for name, kw in (('plain', {}), ('pos_weight', {'pos_weight': pw})):
    for red in ('mean', 'sum'):
        xx = x.clone().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xx, y, reduction=red, **kw)
        loss.backward()
        bce[f'{name}_{red}_loss'] = float(loss)
        bce[f'{name}_{red}_grad'] = flat(xx.grad)
    xx = x.clone()
    bce[f'{name}_none'] = flat(torch.nn.functional.binary_cross_entropy_with_logits(xx, y, reduction='none', **kw))
fx['bce'] = bce

# ---- softmax cross-entropy with label smoothing ----
N, C = 4, 6
x = torch.randn(N, C) * 2
x[1, 2] = 30.0
t = torch.tensor([0, 2, 5, 3])
ce = {'N': N, 'C': C, 'x': flat(x), 'target': t.tolist()}
for ls in (0.0, 0.1):
    for red in ('mean', 'sum'):
        xx = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(xx, t, reduction=red, label_smoothing=ls)
        loss.backward()
        ce[f'ls{ls}_{red}_loss'] = float(loss)
        ce[f'ls{ls}_{red}_grad'] = flat(xx.grad)
fx['ce'] = ce

# ---- optimizers: three groups as sieve builds them from ParamRefs ----
# backbone weight (decay), backbone bias (no decay), head weight (decay, lr x 10).
# Torch groups: lr = base*mult, weight_decay = wd or 0. A per-step LR is applied through
# group['lr'] = lrs[s] * mult before each step, exactly how a scheduler drives it.
shapes = {'backbone.weight': (3, 4), 'backbone.bias': (3,), 'fc.weight': (2, 3)}
init = {n: torch.randn(*s) for n, s in shapes.items()}
STEPS = 6
grads = [{n: torch.randn(*s) for n, s in shapes.items()} for _ in range(STEPS)]
grads[2]['fc.weight'].zero_()
lrs = [0.1, 0.05, 0.2, 0.1, 0.01, 0.3]

def run_opt(make):
    ps = {n: init[n].clone().requires_grad_(True) for n in shapes}
    mults = {'backbone.weight': 1.0, 'backbone.bias': 1.0, 'fc.weight': 10.0}
    decays = {'backbone.weight': True, 'backbone.bias': False, 'fc.weight': True}
    opt = make([{'params': [ps[n]], 'name': n} for n in shapes], decays)
    traj = []
    for s in range(STEPS):
        for g in opt.param_groups:
            g['lr'] = lrs[s] * mults[g['name']]
        for n in shapes:
            ps[n].grad = grads[s][n].clone()
        opt.step()
        traj.append({n: flat(ps[n]) for n in shapes})
    return traj

def groups_wd(groups, decays, wd):
    for g in groups:
        g['weight_decay'] = wd if decays[g['name']] else 0.0
    return groups

opt_fx = {'shapes': {n: list(s) for n, s in shapes.items()}, 'init': {n: flat(v) for n, v in init.items()},
          'grads': [{n: flat(g[n]) for n in shapes} for g in grads], 'lrs': lrs,
          'lr_mult': {'fc.': 10.0}, 'cases': {}}
for name, wd, mom, nest in (('sgd_plain', 0.0, 0.0, False), ('sgd_momentum', 1e-2, 0.9, False),
                            ('sgd_nesterov', 5e-2, 0.9, True)):
    traj = run_opt(lambda gs, d: torch.optim.SGD(groups_wd(gs, d, wd), lr=0.1, momentum=mom, nesterov=nest))
    opt_fx['cases'][name] = {'kind': 'sgd', 'weight_decay': wd, 'momentum': mom, 'nesterov': nest, 'traj': traj}
for name, wd, betas, eps in (('adamw_default', 1e-2, (0.9, 0.999), 1e-8), ('adamw_strong', 0.3, (0.8, 0.95), 1e-3)):
    traj = run_opt(lambda gs, d: torch.optim.AdamW(groups_wd(gs, d, wd), lr=0.1, betas=betas, eps=eps))
    opt_fx['cases'][name] = {'kind': 'adamw', 'weight_decay': wd, 'beta1': betas[0], 'beta2': betas[1],
                             'eps': eps, 'traj': traj}
fx['optim'] = opt_fx

# ---- LR schedules: the LR used by optimizer step s, s = 0 .. steps-1 ----
def lr_trace(make, steps, base):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    return out

sch = {}
for warm, total, start, eta_min in ((5, 20, 0.01, 1e-4), (3, 12, 0.1, 0.0), (1, 9, 0.5, 0.001)):
    base = 0.1
    def mk(opt, warm=warm, total=total, start=start, eta_min=eta_min):
        a = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=warm)
        b = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm, eta_min=eta_min)
        return torch.optim.lr_scheduler.SequentialLR(opt, [a, b], milestones=[warm])
    sch[f'warmcos_{warm}_{total}'] = {'base': base, 'warmup': warm, 'total': total, 'start_factor': start,
                                      'eta_min': eta_min, 'lrs': lr_trace(mk, total, base)}
sch['step'] = {'base': 0.2, 'step_size': 3, 'gamma': 0.5,
               'lrs': lr_trace(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5), 11, 0.2)}
fx['schedule'] = sch

os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, 'w') as f:
    json.dump(fx, f, indent=None, separators=(',', ':'))
    f.write('\n')
print('wrote', os.path.normpath(OUT), os.path.getsize(OUT), 'bytes')
