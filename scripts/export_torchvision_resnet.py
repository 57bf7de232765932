#!/usr/bin/env python3
"""Exports randomly initialised torchvision ResNet-18/34 weights (no
download) as a state dict (.pt) and safetensors, plus a fixed one-channel
input and PyTorch's layer4 feature maps for it (conv1 summed over RGB, as
tonno adapts it). tonno-ml's `feature_maps_match_pytorch_on_exported_torchvision_weights`
test compares against them:

    .venv/bin/python scripts/export_torchvision_resnet.py /tmp/parity
    TONNO_TORCH_PARITY_DIR=/tmp/parity cargo test -p tonno-ml --test pretrained
"""
import os
import sys

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "parity"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
x = torch.randn(2, 1, 64, 64)
x.numpy().astype("<f4").tofile(os.path.join(out, "input.f32"))
for depth in (18, 34):
    m = getattr(torchvision.models, f"resnet{depth}")()
    # Non-trivial batch-norm statistics, so that running stats matter.
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    m.eval()
    sd = m.state_dict()
    torch.save(sd, os.path.join(out, f"resnet{depth}.pt"))
    if depth == 18:
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out, "resnet18.safetensors"))
    m.conv1.weight.data = m.conv1.weight.data.sum(dim=1, keepdim=True)
    with torch.no_grad():
        f = m.layer4(m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x))))))))
    f.numpy().astype("<f4").tofile(os.path.join(out, f"resnet{depth}_layer4.f32"))
print("wrote", out)
