//! `--device`: where a subcommand runs the model, shared by every subcommand that runs one.

use clap::ValueEnum;
use longlora::backend::Compute;
use longlora::kernels::{built_with_kernels, Device};
use longlora::model::{LlamaConfig, TrainableSet};
use longlora::{Error, Result};

/// The values of `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// A CUDA GPU when this build has the kernels and the driver sees one, else the CPU.
    Auto,
    /// The CPU reference ops (f32).
    Cpu,
    /// Our CUDA kernels on GPU 0 (bf16).
    Cuda,
    /// Our CUDA kernels in the CPU emulator (bf16; slow, for checking the kernels without a GPU).
    Emu,
}

/// What a command will run on the device: the model's architecture, what it trains (none:
/// evaluation) and its LoRA rank (0: no adapters).
pub struct Workload<'a> {
    pub config: &'a LlamaConfig,
    pub trainable: Option<TrainableSet>,
    pub lora_rank: usize,
}

/// Opens the backend `choice` names for `work` and says on stderr which one runs. `auto` falls
/// back to the CPU, saying why, when the kernels cannot run this workload; an explicit `cuda` or
/// `emu` fails with the reason instead.
pub fn open(choice: DeviceArg, work: &Workload) -> Result<Compute> {
    let compute = open_device(choice)?;
    let supported = compute.check_model(work.config, work.trainable, work.lora_rank);
    let compute = match (choice, supported) {
        (_, Ok(())) => compute,
        (DeviceArg::Auto, Err(why)) => {
            eprintln!("device: auto: the GPU kernels cannot run this ({why}); using the CPU");
            Compute::Cpu
        }
        (_, Err(why)) => return Err(with_cpu_hint(why)),
    };
    eprintln!("device: {}", compute.describe());
    Ok(compute)
}

/// A refusal of the kernels, with the way out on the command line: the CPU runs everything.
fn with_cpu_hint(why: Error) -> Error {
    match why {
        Error::InvalidOption { option, message } => {
            Error::option(option, format!("{message}; use --device cpu"))
        }
        other => other,
    }
}

fn open_device(choice: DeviceArg) -> Result<Compute> {
    let gpu_present = built_with_kernels() && Device::cuda_device_count() > 0;
    let compute = match choice {
        DeviceArg::Cpu => Compute::Cpu,
        DeviceArg::Emu => Compute::Kernels(Device::emulator()),
        DeviceArg::Auto if !gpu_present => Compute::Cpu,
        DeviceArg::Auto | DeviceArg::Cuda => {
            if !built_with_kernels() {
                return Err(Error::option(
                    "device",
                    "cuda: this build has no CUDA kernels (nvcc was not found when it was built); \
                     run scripts/install-nvcc.sh and rebuild, or use --device cpu",
                ));
            }
            if Device::cuda_device_count() == 0 {
                return Err(Error::option(
                    "device",
                    "cuda: the CUDA driver sees no GPU; use --device cpu (or emu)",
                ));
            }
            Compute::Kernels(Device::cuda(0)?)
        }
    };
    Ok(compute)
}
