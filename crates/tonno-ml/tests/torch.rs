//! The LibTorch device (`--device torch`, the `torch` feature) against the
//! pure-Rust flex backend on the same CPU: the same logits and training step,
//! a short training that learns, and heatmaps of every method equal voxel for
//! voxel within a tolerance. Without the feature this file holds no tests.
#![cfg(feature = "torch")]

mod common;

use burn::module::Module;
use burn::tensor::Device;
use common::{dataset, small_config};
use tonno_core::geometry::Ball;
use tonno_core::sampler::PreparedVolume;
use tonno_core::synth::{SynthConfig, generate_case};
use tonno_ml::bench::compare_with_cpu;
use tonno_ml::config::TrainConfig;
use tonno_ml::device::DeviceChoice;
use tonno_ml::encoder::{EncoderConfig, EncoderKind};
use tonno_ml::methods::{Method, SegmentConfig, SliceModel, segment};
use tonno_ml::train::{RunMode, Silent, train};

#[test]
fn torch_encoders_match_flex_before_and_after_a_training_step() {
    for (kind, pixels) in [(EncoderKind::Cnn, 32), (EncoderKind::Resnet18, 64)] {
        let c = compare_with_cpu(kind, pixels, 4, DeviceChoice::Torch).unwrap();
        let scale = c.max_abs_logit.max(1e-3);
        assert!(c.max_abs_logit_diff < 1e-4 * scale.max(1.0), "{c:?}");
        assert!(
            (c.loss_cpu - c.loss_device).abs() < 1e-5 * c.loss_cpu.abs().max(1.0),
            "{c:?}"
        );
        assert!(
            c.max_abs_logit_diff_after_step < 1e-3 * scale.max(1.0),
            "{c:?}"
        );
    }
}

#[test]
fn training_on_torch_learns_the_synthetic_lesions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("data"), 24, (0.5, 0.8));
    // The flex training test's settings, on LibTorch.
    let config = TrainConfig {
        device: DeviceChoice::Torch,
        ..small_config()
    };
    let out = train(
        &data,
        &tmp.path().join("run"),
        config,
        RunMode::New,
        &Silent,
    )
    .unwrap();
    assert!(
        out.best_score >= 0.9,
        "best validation AUROC on torch {}",
        out.best_score
    );
    assert!(tmp.path().join("run/model.bpk").exists());
}

#[test]
fn every_methods_heatmap_on_torch_equals_flexs() {
    let synth = SynthConfig {
        size: 24,
        ..SynthConfig::default()
    };
    let case = generate_case(&synth, 0, true, false).unwrap();
    let v = &case.image;
    let prepared = PreparedVolume::from_parts("x", v.clone(), Ball::covering(v), 0.0, None);
    let encoder = EncoderConfig {
        kind: EncoderKind::Cnn,
        ..EncoderConfig::default()
    };
    let weights = tempfile::tempdir().unwrap();
    let file = weights.path().join("m.bpk");
    let flex = DeviceChoice::Cpu.open().unwrap();
    let torch = DeviceChoice::Torch.open().unwrap();
    let ad = flex.clone().autodiff();
    let initial = tonno_ml::encoder::init_seeded(&ad, 7, || encoder.init(&ad)).unwrap();
    tonno_ml::run::save_weights(&initial, &file).unwrap();
    let config = SegmentConfig {
        directions: 12,
        slices: 16,
        pixels: 32,
        ..SegmentConfig::default()
    };
    let maps = |device: &Device| {
        let net = tonno_ml::run::load_weights(&encoder, &file, &device.clone().autodiff())
            .unwrap()
            .valid();
        let model = SliceModel::Net {
            encoder: &net,
            device: device.clone(),
            batch: 64,
        };
        segment(&prepared, &model, &Method::ALL, &config).unwrap().0
    };
    let (a, b) = (maps(&flex), maps(&torch));
    assert_eq!(a.len(), Method::ALL.len());
    for (x, y) in a.iter().zip(&b) {
        let scale = x.volume.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{:?}: an all-zero heatmap", x.method);
        let worst = x
            .volume
            .data()
            .iter()
            .zip(y.volume.data())
            .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(
            worst <= 1e-3 * scale,
            "{:?}: largest voxel difference {worst} of {scale}",
            x.method
        );
    }
}
