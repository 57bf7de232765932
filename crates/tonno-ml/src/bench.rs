//! Throughput of encoders (training and inference) and of the slice
//! sampler, for `tonno bench encoder`.

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::BinaryCrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use serde::Serialize;
use tonno_core::synth::{SynthConfig, generate_case};

use crate::device::DeviceChoice;
use crate::encoder::{EncoderConfig, EncoderKind};
use crate::error::Result;
use crate::infer;
use crate::sampler::{PreparedVolume, SamplingConfig, SliceSampler};

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
    ad.seed(0);
    let cfg = EncoderConfig {
        kind,
        ..EncoderConfig::default()
    };
    let mut model = cfg.init(&ad)?;
    let parameters = model.num_params();
    let mut optim = AdamWConfig::new().init();
    let bce = BinaryCrossEntropyLossConfig::new()
        .with_logits(true)
        .init(&ad);
    let p = slice_size;
    let x = Tensor::<4>::random(
        [train_batch, 1, p, p],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &ad,
    );
    let labels: Vec<i64> = (0..train_batch).map(|i| (i % 2) as i64).collect();
    let y = Tensor::<2, Int>::from_data(TensorData::new(labels, [train_batch, 1]), &ad);
    let mut t0 = Instant::now();
    for s in 0..=steps {
        if s == 1 {
            t0 = Instant::now(); // step 0 warms up (and JIT-compiles on GPUs)
        }
        let loss = bce.forward(model.forward(x.clone()), y.clone());
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
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
        .collect::<Result<Vec<_>>>()?;
    let sampler = SliceSampler::new(volumes, config)?;
    let t0 = Instant::now();
    for b in 0..batches {
        sampler.bags(0, b as u64, 4, 16);
    }
    Ok((batches * 64) as f64 / t0.elapsed().as_secs_f64())
}
