//! Choosing where networks run: `cpu` (burn's flex backend, always built),
//! `torch` and `torch-cuda[:N]` (LibTorch on the CPU or the N-th NVIDIA GPU,
//! the `torch` cargo feature), `vulkan` (the `vulkan` feature) or `cuda`
//! (the `cuda` feature).

use std::str::FromStr;

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A device a user can ask for. Written in configs as its name (`cpu`,
/// `torch`, `torch-cuda:1`, ...), the same string `--device` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// burn's flex backend on the CPU threads.
    #[default]
    Cpu,
    /// LibTorch on the CPU threads.
    Torch,
    /// LibTorch on the NVIDIA GPU with this index.
    TorchCuda(usize),
    /// The first GPU through Vulkan.
    Vulkan,
    /// The first GPU through CUDA.
    Cuda,
}

/// Every device name `--device` accepts, for help texts and errors.
const DEVICE_NAMES: &str = "cpu, torch, torch-cuda[:N], vulkan or cuda";

impl TryFrom<String> for DeviceChoice {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> Self {
        d.to_string()
    }
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let bad = || Error::invalid("device", format!("{s:?}; use {DEVICE_NAMES}"));
        match lower.as_str() {
            "cpu" | "flex" => Ok(Self::Cpu),
            "torch" | "libtorch" => Ok(Self::Torch),
            "torch-cuda" => Ok(Self::TorchCuda(0)),
            "vulkan" | "gpu" => Ok(Self::Vulkan),
            "cuda" => Ok(Self::Cuda),
            other => match other.strip_prefix("torch-cuda:") {
                Some(index) => index.parse().map(Self::TorchCuda).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Torch => f.write_str("torch"),
            Self::TorchCuda(i) => write!(f, "torch-cuda:{i}"),
            Self::Vulkan => f.write_str("vulkan"),
            Self::Cuda => f.write_str("cuda"),
        }
    }
}

impl DeviceChoice {
    /// One of each kind (the first GPU where there is an index), for listings.
    pub const ALL: [DeviceChoice; 5] = [
        Self::Cpu,
        Self::Torch,
        Self::TorchCuda(0),
        Self::Vulkan,
        Self::Cuda,
    ];

    /// Slices per inference forward pass unless the user says otherwise: a
    /// GPU needs large batches to be busy; on the CPU a moderate one keeps
    /// the activations' memory low.
    pub fn default_inference_batch(self) -> usize {
        if self.is_gpu() { 1024 } else { 128 }
    }

    /// Whether this build has the backend.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Torch | Self::TorchCuda(_) => cfg!(feature = "torch"),
            Self::Vulkan => cfg!(feature = "vulkan"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Whether this is a GPU (a missing one is reported as such).
    pub fn is_gpu(self) -> bool {
        matches!(self, Self::TorchCuda(_) | Self::Vulkan | Self::Cuda)
    }

    /// The burn device, checked to work: a tiny computation runs on it.
    /// Errors when the backend is not compiled in or the device is absent.
    pub fn open(self) -> Result<Device> {
        let not_built = |feature: &str| Error::Device {
            device: self.to_string(),
            reason: format!(
                "this tonno was built without it; rebuild with `cargo install --path crates/tonno-cli --features {feature}`"
            ),
        };
        let device = match self {
            Self::Cpu => Device::flex(),
            // burn marks its LibTorch backend deprecated; it is supported for
            // burn 0.22's deprecation window and is tonno's fast path.
            #[cfg(feature = "torch")]
            #[allow(deprecated)]
            Self::Torch => {
                keep_freed_buffers();
                Device::libtorch()
            }
            #[cfg(feature = "torch")]
            #[allow(deprecated)]
            Self::TorchCuda(i) => Device::libtorch_cuda(i),
            #[cfg(not(feature = "torch"))]
            Self::Torch | Self::TorchCuda(_) => return Err(not_built("torch")),
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

/// LibTorch's CPU kernels allocate and free activation-sized buffers at
/// every operation. glibc hands each one back to the kernel (it is above its
/// mmap threshold) and the next allocation page-faults it in again: 12% of a
/// ResNet-18 training step here. Keeping freed buffers in the heap is what
/// PyTorch's CPU performance guide gets from jemalloc or tcmalloc; flex, which
/// reuses its own buffers, measured no gain from it, so only torch sets it.
#[cfg(feature = "torch")]
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only changes glibc's allocation thresholds; it is
        // called once, and any value is valid for both parameters.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        });
    }
}

/// Runs one small operation; GPU backends (LibTorch's CUDA too) panic when
/// no device exists, so the panic is caught and turned into an error.
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
            // LibTorch's errors carry a C++ stack trace (escaped, inside a
            // debug-printed Result): its first line is the reason.
            let msg = msg
                .trim_start_matches("called `Result::unwrap()` on an `Err` value: ")
                .trim_start_matches("Torch(\"");
            let msg = msg.lines().next().unwrap_or("");
            let msg = msg.split("\\n").next().unwrap_or("");
            let what = if choice.is_gpu() {
                "no usable GPU found"
            } else {
                "the backend failed to run"
            };
            Err(Error::Device {
                device: choice.to_string(),
                reason: format!("{what} ({msg})"),
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
        assert!("torch-cuda:x".parse::<DeviceChoice>().is_err());
        assert_eq!(
            "torch-cuda".parse::<DeviceChoice>().unwrap(),
            DeviceChoice::TorchCuda(0)
        );
        DeviceChoice::Cpu.open().unwrap();
    }

    #[test]
    fn names_round_trip_through_display_and_serde() {
        for d in [
            DeviceChoice::Cpu,
            DeviceChoice::Torch,
            DeviceChoice::TorchCuda(3),
            DeviceChoice::Vulkan,
            DeviceChoice::Cuda,
        ] {
            assert_eq!(d.to_string().parse::<DeviceChoice>().unwrap(), d);
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<DeviceChoice>(&json).unwrap(), d);
        }
        // Configs written before the LibTorch devices existed still read.
        assert_eq!(
            serde_json::from_str::<DeviceChoice>("\"vulkan\"").unwrap(),
            DeviceChoice::Vulkan
        );
        assert!(serde_json::from_str::<DeviceChoice>("\"tpu\"").is_err());
    }

    #[test]
    fn torch_opens_when_built_and_says_how_to_build_otherwise() {
        match DeviceChoice::Torch.open() {
            Ok(_) => assert!(DeviceChoice::Torch.compiled_in()),
            Err(e) => {
                assert!(!DeviceChoice::Torch.compiled_in(), "{e}");
                assert!(e.to_string().contains("--features torch"), "{e}");
            }
        }
    }

    #[test]
    fn gpu_devices_give_clear_errors_when_missing_or_not_built() {
        for choice in [
            DeviceChoice::TorchCuda(0),
            DeviceChoice::Vulkan,
            DeviceChoice::Cuda,
        ] {
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
