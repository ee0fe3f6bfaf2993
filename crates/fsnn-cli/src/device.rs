//! Which compute backend a command runs on: `--device auto|gpu|cpu|ADAPTER` (or `FSNN_DEVICE`).
//!
//! `auto` takes a hardware GPU adapter when the machine has one (or the one `--adapter` /
//! `FSNN_ADAPTER` names), else the native CPU backend: a software Vulkan driver (lavapipe) uses a
//! small fraction of the CPU, so it runs only when asked for by name or by `gpu`.

use anyhow::{bail, Result};
use fsnn::gpu::AdapterChoice;

/// The backend a command runs on, before it starts.
#[derive(Debug, Clone)]
pub enum Device {
    Gpu(AdapterChoice),
    Cpu { threads: Option<usize> },
}

impl Device {
    /// From `--device` (else `FSNN_DEVICE`, else `auto`), `--adapter` and `--threads`.
    pub fn choose(
        flag: Option<&str>,
        adapter: &AdapterChoice,
        threads: Option<usize>,
    ) -> Result<Self> {
        if threads == Some(0) {
            bail!("--threads must be at least 1, got 0");
        }
        let env = std::env::var("FSNN_DEVICE").ok().filter(|s| !s.is_empty());
        let want = flag
            .map(str::to_string)
            .or(env)
            .unwrap_or_else(|| "auto".into());
        Ok(match want.as_str() {
            "cpu" => Device::Cpu { threads },
            "gpu" => Device::Gpu(adapter.clone()),
            "auto" if adapter.0.is_some() => Device::Gpu(adapter.clone()),
            "auto" => {
                let hardware = fsnn::gpu::list_adapters()
                    .iter()
                    .any(|a| a.device_type != "Cpu" && a.device_type != "Other");
                if hardware {
                    Device::Gpu(adapter.clone())
                } else {
                    Device::Cpu { threads }
                }
            }
            name => {
                if adapter.0.is_some() {
                    bail!("--device {name} names an adapter and so does --adapter / FSNN_ADAPTER: give one");
                }
                Device::Gpu(AdapterChoice(Some(name.to_string())))
            }
        })
    }
}
