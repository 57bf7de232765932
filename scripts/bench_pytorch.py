#!/usr/bin/env python3
"""PyTorch reference timings for `tonno bench encoder`: the same networks
(tonno's small CNN, torchvision ResNet-18 and ResNet-34, one input channel,
one logit), the same batch sizes and slice sizes, on the CPU threads.

    python3 -m venv .venv && .venv/bin/pip install torch torchvision
    .venv/bin/python scripts/bench_pytorch.py [--steps 5] [--threads 2] [--encoders cnn] [--cnn-width 8] [--device cuda]

Prints JSON shaped like `tonno bench encoder`.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision


class SmallCnn(nn.Module):
    """tonno's default encoder: 4 x (conv3x3 no bias, BN, ReLU, maxpool 2), global max, linear."""

    def __init__(self, width=8, in_ch=1):
        super().__init__()
        layers, c = [], in_ch
        for w in (width, 2 * width, 4 * width, 8 * width):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, 1)

    def forward(self, x):
        return self.fc(torch.amax(self.features(x), dim=(2, 3)))


def resnet(depth):
    m = getattr(torchvision.models, f"resnet{depth}")(num_classes=1)
    m.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    return m


def bench(name, model, p, batch, infer_batch, steps, device):
    # GPU kernels run asynchronously: the clock stops after the device is done.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, p, p, device=device)
    y = (torch.arange(batch, device=device) % 2).float().unsqueeze(1)
    model.train()
    for s in range(steps + 1):
        if s == 1:
            sync()
            t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    sync()
    train = steps * batch / (time.perf_counter() - t0)
    model.eval()
    xi = torch.randn(infer_batch, 1, p, p, device=device)
    with torch.no_grad():
        model(xi)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            model(xi)
        sync()
    infer = steps * infer_batch / (time.perf_counter() - t0)
    return {"encoder": name, "slice_size": p, "train_batch": batch, "train_slices_per_s": train,
            "infer_batch": infer_batch, "infer_slices_per_s": infer,
            "parameters": sum(q.numel() for q in model.parameters())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--infer-batch", type=int, default=128)
    ap.add_argument("--encoders", default="cnn,resnet18,resnet34")
    ap.add_argument("--cnn-width", type=int, default=8, help="tonno's default is 8")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    nets = {
        "cnn": lambda: (SmallCnn(a.cnn_width), 64),
        "resnet18": lambda: (resnet(18), 128),
        "resnet34": lambda: (resnet(34), 128),
    }
    rows = []
    for name in a.encoders.split(","):
        model, p = nets[name]()
        rows.append(bench(name, model, p, a.batch, a.infer_batch, a.steps, device))
    print(json.dumps({"bench": "encoder", "framework": f"pytorch {torch.__version__}", "device": str(device),
                      "threads": torch.get_num_threads(), "encoders": rows}, indent=2))


if __name__ == "__main__":
    main()
