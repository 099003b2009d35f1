#!/usr/bin/python3
"""e2e: a checkpoint written by sieve's Trainer is loadable by PyTorch.
usage: torch_load_e2e.py TRAIN_EXE TOOLS_DIR
Runs TRAIN_EXE into a temporary run directory, then: torchvision's ResNet(Bottleneck,
[1,1,1,1], num_classes=5) load_state_dict(strict=True) of RUN/last/model.safetensors, eval
logits equal sieve's (probe.safetensors), and state.json / metrics.jsonl parse as JSON."""
import json, os, subprocess, sys, tempfile

exe, tools = sys.argv[1], sys.argv[2]
sys.path.insert(0, tools)
import safetensors_py as stp  # noqa: E402
import torch  # noqa: E402
from torchvision.models.resnet import ResNet, Bottleneck  # noqa: E402

with tempfile.TemporaryDirectory() as run:
    subprocess.run([exe, run], check=True)
    sd = stp.load_torch(os.path.join(run, 'last', 'model.safetensors'))
    assert sd['bn1.num_batches_tracked'].dtype == torch.int64, sd['bn1.num_batches_tracked'].dtype
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=5)
    model.load_state_dict(sd, strict=True)
    model.eval()
    probe = stp.load_torch(os.path.join(run, 'probe.safetensors'))
    with torch.no_grad():
        got = model(probe['input'])
    want = probe['logits']
    err = ((got - want).abs().max() / want.abs().max()).item()
    print(f'torch vs sieve eval logits: max abs diff / max |logit| = {err:.3e}')
    assert err < 1e-4, err
    state = json.load(open(os.path.join(run, 'last', 'state.json')))
    assert state['format'] == 'sieve.train.state v1' and state['step'] == 2 and state['epoch'] == 1, state
    assert state['config.model'] == 'resnet[1,1,1,1]+dropout+fc'
    opt = stp.load_torch(os.path.join(run, 'last', 'optimizer.safetensors'))
    assert opt['step.fc.weight'].item() == 2 and opt['exp_avg.fc.weight'].shape == (5, 2048)
    lines = [json.loads(l) for l in open(os.path.join(run, 'metrics.jsonl'))]
    assert len(lines) == 1 and lines[0]['epoch'] == 1 and lines[0]['step'] == 2, lines
    manifest = open(os.path.join(run, 'last', 'MANIFEST')).read().split('\n')
    assert manifest[0] == 'sieve-checkpoint v1', manifest
print('ok')
