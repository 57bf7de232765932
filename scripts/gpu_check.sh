#!/usr/bin/env bash
# The device check of tonno's GPU path (docs/gpu.md says how to prepare it): run on the
# lent machine from the repository root, carrying .devcarry (the stripped,
# xz-compressed `tonno` built with `--features vulkan`, and the Vulkan loader
# packages in .devcarry/gl). Prints each figure as soon as it is measured.
# Prepared for a session that is lent a device; the torch-cuda part has not yet run on one.
set -u
OUT=${OUT:-/tmp/tonno-gpu}
mkdir -p "$OUT"
cd .devcarry || exit 1
xz -dkf tonno.xz && chmod +x tonno
for f in gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== encoders on vulkan, checked against the CPU (same weights, same batch)"
./tonno bench encoder --device vulkan --compare-cpu --encoders cnn,resnet18 --steps 10 --batch 96 --infer-batch 512 \
  > "$OUT/bench_vulkan.json" || echo "bench vulkan failed: $?"
echo "== the same on this machine's CPU ($(nproc) threads)"
./tonno bench encoder --device cpu --encoders cnn,resnet18 --steps 5 --batch 96 --infer-batch 512 \
  > "$OUT/bench_cpu.json" || echo "bench cpu failed: $?"
echo "== train and segment on vulkan"
./tonno synth --out "$OUT/d" --cases 8 --size 64 --seed 1 --force
/usr/bin/time -f "train wall %e s" ./tonno train --data "$OUT/d" --out "$OUT/run" --device vulkan --epochs 2 --steps-per-epoch 20 --force
/usr/bin/time -f "segment vulkan wall %e s" ./tonno segment --model "$OUT/run" --input "$OUT/d/imagesTs" --out "$OUT/seg_vk" --method all --device vulkan --force
/usr/bin/time -f "segment cpu wall %e s" ./tonno segment --model "$OUT/run" --input "$OUT/d/imagesTs" --out "$OUT/seg_cpu" --method tonno --device cpu --force
echo "== vulkan vs cpu ToNNO heatmaps"
for f in "$OUT"/seg_cpu/*_tonno.nii.gz; do
  b=$(basename "$f")
  ./tonno info "$f" --json | grep -E '"intensity_(min|max|mean)"' | tr -d ' \n'; echo "  cpu $b"
  ./tonno info "$OUT/seg_vk/$b" --json | grep -E '"intensity_(min|max|mean)"' | tr -d ' \n'; echo "  vulkan $b"
done
if [ -f tonno-torch.xz ]; then
  echo "== LibTorch on the GPU (torch-cuda, the libtorch of /opt/torch/.venv) and PyTorch itself"
  xz -dkf tonno-torch.xz && chmod +x tonno-torch
  PY=/opt/torch/.venv/bin/python
  TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  tt() { LD_LIBRARY_PATH=$TORCH_LIB ./tonno-torch "$@"; }
  tt info --devices
  tt bench encoder --device torch-cuda --compare-cpu --encoders cnn,resnet18 --steps 20 --batch 96 --infer-batch 1024 \
    > "$OUT/bench_torch_cuda.json" || echo "bench torch-cuda failed: $?"
  $PY ../scripts/bench_pytorch.py --device cuda --encoders cnn,resnet18 --steps 20 --batch 96 --infer-batch 1024 \
    > "$OUT/bench_pytorch_cuda.json" || echo "bench pytorch cuda failed: $?"
  echo "== 128^3 ToNNO heatmap, K = 256, S = 128"
  for d in torch-cuda vulkan; do
    b=./tonno; [ $d = torch-cuda ] && b=tt
    $b bench segment --sizes 128 --directions 256 --slices 128 --method tonno --device $d \
      > "$OUT/segment_$d.json" || echo "segment $d failed: $?"
  done
  echo "== slices/s: tonno torch-cuda vs PyTorch (same GPU)"
  $PY - "$OUT" <<'P'
import json, sys
out = sys.argv[1]
def rows(f):
    try:
        return {e["encoder"]: e for e in json.load(open(f"{out}/{f}"))["encoders"]}
    except Exception as e:
        return {}
t, p = rows("bench_torch_cuda.json"), rows("bench_pytorch_cuda.json")
for enc in ("cnn", "resnet18"):
    a, b = t.get(enc), p.get(enc)
    if a and b:
        print(f"{enc:9s} train {a['train_slices_per_s']:10.0f} vs {b['train_slices_per_s']:10.0f} ({a['train_slices_per_s'] / b['train_slices_per_s']:.2f}x)"
              f"  infer {a['infer_slices_per_s']:10.0f} vs {b['infer_slices_per_s']:10.0f} ({a['infer_slices_per_s'] / b['infer_slices_per_s']:.2f}x)")
for d in ("torch-cuda", "vulkan"):
    try:
        r = json.load(open(f"{out}/segment_{d}.json"))["rows"][0]
        print(f"ToNNO 128^3 K=256 S=128 on {d}: {r['seconds']:.2f} s (encoder {r['encoder_s']:.2f} s)")
    except Exception:
        print(f"ToNNO 128^3 on {d}: no figure")
P
fi
