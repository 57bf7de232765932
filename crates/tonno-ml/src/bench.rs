//! Throughput of encoders (training and inference) and of the slice
//! sampler, for `tonno bench encoder`.

use std::time::Instant;

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;
use tonno_core::sampler::{Batch, PreparedVolume, SamplingConfig, SliceSampler};
use tonno_core::synth::{SynthConfig, generate_case};

use crate::config::{Objective, TrainConfig};
use crate::device::DeviceChoice;
use crate::encoder::{EncoderConfig, EncoderKind};
use crate::error::Result;
use crate::infer;
use crate::train::TrainStep;

/// Figures for one encoder.
#[derive(Debug, Clone, Serialize)]
pub struct EncoderBench {
    pub encoder: EncoderKind,
    pub slice_size: usize,
    pub parameters: usize,
    pub train_batch: usize,
    pub train_slices_per_s: f64,
    pub infer_batch: usize,
    pub infer_slices_per_s: f64,
}

/// Times `steps` training steps (after one warm-up step) and `infer_batches`
/// inference batches of random input.
pub fn encoder_throughput(
    kind: EncoderKind,
    slice_size: usize,
    train_batch: usize,
    infer_batch: usize,
    steps: usize,
    device: DeviceChoice,
) -> Result<EncoderBench> {
    let plain = device.open()?;
    let ad = plain.clone().autodiff();
    let cfg = EncoderConfig {
        kind,
        ..EncoderConfig::default()
    };
    let mut model = crate::encoder::init_seeded(&ad, 0, || cfg.init(&ad))?;
    let parameters = model.num_params();
    // The default training's step (its objective and weight decay) on a
    // batch of this size.
    let train_config = TrainConfig {
        encoder: kind,
        batch_size: train_batch,
        ..TrainConfig::default()
    };
    train_config.validate()?;
    let mut stepper = TrainStep::new(&train_config, &ad);
    let p = slice_size;
    let batch = || Batch {
        slices: (0..train_batch * p * p)
            .map(|i| (((i * 7919) % 2000) as f32 / 1000.0) - 1.0)
            .collect(),
        labels: (0..stepper.labels_per_batch(train_batch))
            .map(|i| (i % 2) as f32)
            .collect(),
        n: train_batch,
        channels: 1,
        pixels: p,
    };
    let batches: Vec<Batch> = (0..=steps).map(|_| batch()).collect();
    let mut t0 = Instant::now();
    for (s, b) in batches.into_iter().enumerate() {
        if s == 1 {
            t0 = Instant::now(); // step 0 warms up (and JIT-compiles on GPUs)
        }
        (model, _) = stepper.step(model, b, train_config.lr, &ad);
    }
    let train = (steps * train_batch) as f64 / t0.elapsed().as_secs_f64();
    let valid = model.valid();
    let input: Vec<f32> = (0..infer_batch * p * p)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    infer::logits(&valid, &plain, &input, 1, p, infer_batch)?;
    let t0 = Instant::now();
    let reps = steps.max(1);
    for _ in 0..reps {
        infer::logits(&valid, &plain, &input, 1, p, infer_batch)?;
    }
    let infer_rate = (reps * infer_batch) as f64 / t0.elapsed().as_secs_f64();
    Ok(EncoderBench {
        encoder: kind,
        slice_size,
        parameters,
        train_batch,
        train_slices_per_s: train,
        infer_batch,
        infer_slices_per_s: infer_rate,
    })
}

/// Slices per second of the training sampler (MIL bags of 16 on 48^3
/// synthetic scans, all threads).
pub fn sampler_throughput(slice_size: usize, batches: usize) -> Result<f64> {
    let synth = SynthConfig {
        size: 48,
        ..SynthConfig::default()
    };
    let config = SamplingConfig {
        slice_size,
        ..SamplingConfig::default()
    };
    let volumes = (0..4)
        .map(|i| {
            let c = generate_case(&synth, i, i % 2 == 0, false)?;
            PreparedVolume::new(&c.name, &c.image, Some(c.label()), &config)
        })
        .collect::<tonno_core::Result<Vec<_>>>()?;
    let sampler = SliceSampler::new(volumes, config)?;
    let t0 = Instant::now();
    for b in 0..batches {
        sampler.bags(0, b as u64, 4, 16);
    }
    Ok((batches * 64) as f64 / t0.elapsed().as_secs_f64())
}

/// How far a device's numbers are from the CPU's on the same weights and input.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCheck {
    pub encoder: EncoderKind,
    pub device: DeviceChoice,
    /// Largest |logit(device) - logit(cpu)| on a fixed batch (inference mode).
    pub max_abs_logit_diff: f64,
    /// Largest |logit| on that batch, for scale.
    pub max_abs_logit: f64,
    /// Training loss of one step from the same weights on each device.
    pub loss_cpu: f64,
    pub loss_device: f64,
    /// Largest logit difference after one AdamW step on each device.
    pub max_abs_logit_diff_after_step: f64,
}

/// Runs the same weights and batch on the CPU and on `device`.
pub fn compare_with_cpu(
    kind: EncoderKind,
    slice_size: usize,
    batch: usize,
    device: DeviceChoice,
) -> Result<DeviceCheck> {
    let cpu = DeviceChoice::Cpu.open()?;
    let dev = device.open()?;
    let (cpu_ad, dev_ad) = (cpu.clone().autodiff(), dev.clone().autodiff());
    let cfg = EncoderConfig {
        kind,
        ..EncoderConfig::default()
    };
    // Both copies come from the same saved weights, as a model trained on one
    // device and used on another would: clones would share tensors and batch
    // norm's running statistics, so one copy's training step would leak into
    // the other's.
    let weights = std::env::temp_dir().join(format!(
        "tonno-device-check-{}-{kind}.bpk",
        std::process::id()
    ));
    // burn reads the weights lazily, so the file lives until this returns.
    struct RemoveOnDrop(std::path::PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = RemoveOnDrop(weights.clone());
    let initial = crate::encoder::init_seeded(&cpu_ad, 1, || cfg.init(&cpu_ad))?;
    crate::run::save_weights(&initial, &weights)?;
    let model_cpu = crate::run::load_weights(&cfg, &weights, &cpu_ad)?;
    let model_dev = crate::run::load_weights(&cfg, &weights, &dev_ad)?;
    let p = slice_size;
    let input: Vec<f32> = (0..batch * p * p)
        .map(|i| (((i * 7919) % 2000) as f32 / 1000.0) - 1.0)
        .collect();
    let labels: Vec<f32> = (0..batch).map(|i| (i % 2) as f32).collect();
    let infer =
        |m: &crate::encoder::Encoder, d: &Device| infer::logits(&m.valid(), d, &input, 1, p, batch);
    let (a, b) = (infer(&model_cpu, &cpu)?, infer(&model_dev, &dev)?);
    let diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max)
    };
    // The training step with a label per slice (any batch size will do).
    let train_config = TrainConfig {
        objective: Objective::Slices,
        ..TrainConfig::default()
    };
    let step = |m: crate::encoder::Encoder, d: &Device| -> Result<(f64, crate::encoder::Encoder)> {
        let b = Batch {
            slices: input.clone(),
            labels: labels.clone(),
            n: batch,
            channels: 1,
            pixels: p,
        };
        let (m, l) = TrainStep::new(&train_config, d).step(m, b, train_config.lr, d);
        Ok((l, m))
    };
    let (loss_cpu, stepped_cpu) = step(model_cpu, &cpu_ad)?;
    let (loss_device, stepped_dev) = step(model_dev, &dev_ad)?;
    let (a2, b2) = (infer(&stepped_cpu, &cpu)?, infer(&stepped_dev, &dev)?);
    Ok(DeviceCheck {
        encoder: kind,
        device,
        max_abs_logit_diff: diff(&a, &b),
        max_abs_logit: a.iter().map(|x| x.abs() as f64).fold(0.0, f64::max),
        loss_cpu,
        loss_device,
        max_abs_logit_diff_after_step: diff(&a2, &b2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_agrees_with_itself_through_the_device_check() {
        let c = compare_with_cpu(EncoderKind::Cnn, 32, 4, DeviceChoice::Cpu).unwrap();
        assert!(
            c.max_abs_logit_diff < 1e-6 && c.max_abs_logit_diff_after_step < 1e-6,
            "{c:?}"
        );
        assert!((c.loss_cpu - c.loss_device).abs() < 1e-6);
    }
}
