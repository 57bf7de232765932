//! torchvision ResNet weights load into tonno's ResNet by name.
//!
//! The safetensors test writes a file with torchvision's exact key names and
//! shapes (deterministic values, no download). The parity test compares
//! feature maps with PyTorch itself on weights exported by
//! `scripts/export_torchvision_resnet.py`; it runs when
//! `TONNO_TORCH_PARITY_DIR` names that script's output folder.

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use tonno_ml::encoder::pretrained::load_torchvision;
use tonno_ml::encoder::{Encoder, EncoderConfig, EncoderKind, Pooling};

fn torchvision_resnet18_keys() -> Vec<(String, Vec<usize>)> {
    let mut keys = vec![("conv1.weight".to_string(), vec![64, 3, 7, 7])];
    let bn = |keys: &mut Vec<(String, Vec<usize>)>, p: &str, n: usize| {
        for s in ["weight", "bias", "running_mean", "running_var"] {
            keys.push((format!("{p}.{s}"), vec![n]));
        }
    };
    bn(&mut keys, "bn1", 64);
    let mut c = 64;
    for (l, w) in [64usize, 128, 256, 512].iter().enumerate() {
        for b in 0..2 {
            let p = format!("layer{}.{b}", l + 1);
            let cin = if b == 0 { c } else { *w };
            keys.push((format!("{p}.conv1.weight"), vec![*w, cin, 3, 3]));
            bn(&mut keys, &format!("{p}.bn1"), *w);
            keys.push((format!("{p}.conv2.weight"), vec![*w, *w, 3, 3]));
            bn(&mut keys, &format!("{p}.bn2"), *w);
            if b == 0 && l > 0 {
                keys.push((format!("{p}.downsample.0.weight"), vec![*w, c, 1, 1]));
                bn(&mut keys, &format!("{p}.downsample.1"), *w);
            }
        }
        c = *w;
    }
    keys.push(("fc.weight".into(), vec![1000, 512]));
    keys.push(("fc.bias".into(), vec![1000]));
    keys
}

fn values(name: &str, n: usize) -> Vec<f32> {
    let seed = name
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) as f32;
    let positive = name.ends_with("running_var");
    (0..n)
        .map(|i| {
            let v = ((seed * 0.001 + i as f32 * 0.37).sin()) * 0.05;
            if positive { v.abs() + 0.5 } else { v }
        })
        .collect()
}

/// A minimal safetensors writer: 8-byte header length, JSON header, data.
fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>)]) -> BTreeMap<String, Vec<f32>> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    let mut all = BTreeMap::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let v = values(name, n);
        let start = data.len();
        for x in &v {
            data.extend_from_slice(&x.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
        all.insert(name.clone(), v);
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
    all
}

fn tensor(model: &Encoder, path: &str) -> Vec<f32> {
    let t = model
        .collect(None, None, true)
        .into_iter()
        .find(|t| t.name == path)
        .unwrap_or_else(|| panic!("no tensor {path}"));
    let bytes = t.to_bytes().unwrap();
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn config(in_channels: usize) -> EncoderConfig {
    EncoderConfig {
        kind: EncoderKind::Resnet18,
        in_channels,
        classes: 1,
        cnn_width: 16,
        pooling: Pooling::Avg,
    }
}

#[test]
fn torchvision_safetensors_load_by_name_with_adapted_first_convolution() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet18.safetensors");
    let src = write_safetensors(&file, &torchvision_resnet18_keys());
    let device = Device::flex();
    let model = load_torchvision(&config(1), &file, &device).unwrap();
    // Batch norm: weight/bias -> gamma/beta; running statistics as they are.
    assert_eq!(tensor(&model, "bn1.gamma"), src["bn1.weight"]);
    assert_eq!(
        tensor(&model, "layer3.1.bn2.beta"),
        src["layer3.1.bn2.bias"]
    );
    assert_eq!(
        tensor(&model, "layer4.0.bn1.running_var"),
        src["layer4.0.bn1.running_var"]
    );
    // The shortcut's Sequential indices.
    assert_eq!(
        tensor(&model, "layer2.0.downsample.conv.weight"),
        src["layer2.0.downsample.0.weight"]
    );
    assert_eq!(
        tensor(&model, "layer2.0.downsample.bn.running_mean"),
        src["layer2.0.downsample.1.running_mean"]
    );
    // conv1 summed over RGB for one input channel.
    let rgb = &src["conv1.weight"];
    let one = tensor(&model, "conv1.weight");
    assert_eq!(one.len(), 64 * 49);
    for o in 0..64 {
        for k in 0..49 {
            let want: f32 = (0..3).map(|c| rgb[(o * 3 + c) * 49 + k]).sum();
            assert!((one[o * 49 + k] - want).abs() < 1e-6);
        }
    }
    // Four channels: repeated RGBR, scaled by 3/4.
    let four = tensor(
        &load_torchvision(&config(4), &file, &device).unwrap(),
        "conv1.weight",
    );
    assert!((four[3 * 49] - rgb[0] * 0.75).abs() < 1e-6);
    // The classifier keeps its fresh one-logit shape.
    let y = model.forward(Tensor::<4>::zeros([2, 1, 64, 64], &device));
    assert_eq!(y.dims(), [2, 1]);
}

#[test]
fn incomplete_or_foreign_weights_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = torchvision_resnet18_keys();
    keys.retain(|(k, _)| k != "layer4.1.conv2.weight");
    let file = dir.path().join("cut.safetensors");
    write_safetensors(&file, &keys);
    let e = load_torchvision(&config(1), &file, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("missing"),
        "{e}"
    );
    std::fs::write(dir.path().join("junk.pt"), b"not a checkpoint").unwrap();
    let e = load_torchvision(&config(1), &dir.path().join("junk.pt"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("junk.pt"), "{e}");
    let cnn = EncoderConfig {
        kind: EncoderKind::Cnn,
        ..config(1)
    };
    assert!(load_torchvision(&cnn, &file, &Device::flex()).is_err());
}

#[test]
fn feature_maps_match_pytorch_on_exported_torchvision_weights() {
    let Some(dir) = std::env::var_os("TONNO_TORCH_PARITY_DIR") else {
        eprintln!(
            "skipped: set TONNO_TORCH_PARITY_DIR to the output of scripts/export_torchvision_resnet.py"
        );
        return;
    };
    let dir = Path::new(&dir);
    let read = |name: &str| -> Vec<f32> {
        std::fs::read(dir.join(name))
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let input = read("input.f32");
    let device = Device::flex();
    for (file, kind) in [
        ("resnet18.pt", EncoderKind::Resnet18),
        ("resnet18.safetensors", EncoderKind::Resnet18),
        ("resnet34.pt", EncoderKind::Resnet34),
    ] {
        let cfg = EncoderConfig { kind, ..config(1) };
        let model = load_torchvision(&cfg, &dir.join(file), &device).unwrap();
        let model = burn::module::Module::valid(&model);
        let x = Tensor::<4>::from_data(TensorData::new(input.clone(), [2, 1, 64, 64]), &device);
        let got: Vec<f32> = model
            .features(x, 4)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let want = read(&format!("{}_layer4.f32", file.split('.').next().unwrap()));
        assert_eq!(got.len(), want.len(), "{file}");
        let scale = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{file}: max |tonno - pytorch| = {worst:.2e} (max |feature| {scale:.2})");
        assert!(worst < 1e-3 * scale.max(1.0), "{file}: {worst}");
    }
}
