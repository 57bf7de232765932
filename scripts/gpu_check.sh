#!/usr/bin/env bash
# The device check of tonno's GPU path (docs/gpu.md says how to prepare it): run on the
# lent machine from the repository root, carrying .devcarry (the stripped,
# xz-compressed `tonno` built with `--features vulkan`, and the Vulkan loader
# packages in .devcarry/gl). Prints each figure as soon as it is measured.
# Prepared for a session that is lent a device; not yet run on one.
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
./tonno bench encoder --device vulkan --compare-cpu --encoders cnn,resnet18 --steps 10 --batch 64 --infer-batch 512 \
  > "$OUT/bench_vulkan.json" || echo "bench vulkan failed: $?"
echo "== the same on this machine's CPU ($(nproc) threads)"
./tonno bench encoder --device cpu --encoders cnn,resnet18 --steps 5 --batch 64 --infer-batch 512 \
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
