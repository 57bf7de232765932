//! Choosing where networks run: `cpu` (burn's flex backend, always built),
//! `vulkan` (the `vulkan` cargo feature) or `cuda` (the `cuda` feature).

use std::str::FromStr;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// burn's flex backend on the CPU threads.
    #[default]
    Cpu,
    /// The first GPU through Vulkan.
    Vulkan,
    /// The first GPU through CUDA.
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "vulkan" | "gpu" => Ok(Self::Vulkan),
            "cuda" => Ok(Self::Cuda),
            other => Err(Error::invalid(
                "device",
                format!("{other:?}; use cpu, vulkan or cuda"),
            )),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu",
            Self::Vulkan => "vulkan",
            Self::Cuda => "cuda",
        })
    }
}

impl DeviceChoice {
    /// Slices per inference forward pass unless the user says otherwise: a
    /// GPU needs large batches to be busy; on the CPU a moderate one keeps
    /// the activations' memory low.
    pub fn default_inference_batch(self) -> usize {
        match self {
            Self::Cpu => 128,
            Self::Vulkan | Self::Cuda => 1024,
        }
    }

    /// Whether this build has the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The burn device, checked to work: a tiny computation runs on it.
    /// Errors when the backend is not compiled in or the device is absent.
    pub fn open(self) -> Result<Device> {
        let not_built = |feature: &str| Error::Device {
            device: self.to_string(),
            reason: format!(
                "this tonno was built without GPU support for it; rebuild with `cargo install --path crates/tonno-cli --features {feature}`"
            ),
        };
        let device = match self {
            Self::Cpu => Device::flex(),
            #[cfg(feature = "vulkan")]
            Self::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
            #[cfg(not(feature = "vulkan"))]
            Self::Vulkan => return Err(not_built("vulkan")),
            #[cfg(feature = "cuda")]
            Self::Cuda => Device::cuda(0),
            #[cfg(not(feature = "cuda"))]
            Self::Cuda => return Err(not_built("cuda")),
        };
        if self != Self::Cpu {
            probe(self, &device)?;
        }
        Ok(device)
    }
}

/// Runs one small operation; GPU backends panic when no adapter exists, so
/// the panic is caught and turned into an error.
fn probe(choice: DeviceChoice, device: &Device) -> Result<()> {
    let d = device.clone();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(move || {
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0], &d);
        x.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(prev);
    match r {
        Ok(v) if (v - 6.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(Error::Device {
            device: choice.to_string(),
            reason: format!("a test sum gave {v} instead of 6"),
        }),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown failure".into());
            Err(Error::Device {
                device: choice.to_string(),
                reason: format!("no usable GPU found ({msg})"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_cpu_always_opens() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert!("tpu".parse::<DeviceChoice>().is_err());
        DeviceChoice::Cpu.open().unwrap();
    }

    #[test]
    fn gpu_devices_give_clear_errors_when_missing_or_not_built() {
        for choice in [DeviceChoice::Vulkan, DeviceChoice::Cuda] {
            match choice.open() {
                // A machine with a GPU and the feature: fine.
                Ok(_) => assert!(choice.compiled_in()),
                Err(e) => {
                    let msg = e.to_string();
                    if choice.compiled_in() {
                        assert!(msg.contains("no usable GPU"), "{msg}");
                    } else {
                        assert!(msg.contains("--features"), "{msg}");
                    }
                }
            }
        }
    }
}
