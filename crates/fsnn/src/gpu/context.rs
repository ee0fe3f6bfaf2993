//! Headless wgpu instance, adapter choice and device creation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Serialize;

pub const NO_ADAPTER_HELP: &str = "no GPU adapter found. fsnn needs a Vulkan, Metal or DX12 driver. \
On a machine without a GPU install Mesa's software Vulkan driver (lavapipe): on Debian/Ubuntu \
`apt-get install mesa-vulkan-drivers libvulkan1` (on Debian bookworm take it from bookworm-backports, \
see .ci/install-lavapipe.sh); then check with `fsnn info`.";

/// Which adapter to use: `None` picks the most capable one.
#[derive(Debug, Clone, Default)]
pub struct AdapterChoice(pub Option<String>);

impl AdapterChoice {
    /// `--adapter` wins over `FSNN_ADAPTER`.
    pub fn from_flag_or_env(flag: Option<&str>) -> Self {
        match flag {
            Some(s) => Self(Some(s.to_string())),
            None => Self(std::env::var("FSNN_ADAPTER").ok().filter(|s| !s.is_empty())),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor: u32,
    pub device: u32,
}

impl AdapterSummary {
    fn new(index: usize, info: &wgpu::AdapterInfo) -> Self {
        Self {
            index,
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            vendor: info.vendor,
            device: info.device,
        }
    }
}

fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 1,
        wgpu::DeviceType::Other => 0,
    }
}

/// Counts the bytes of every GPU buffer fsnn allocates, live and peak.
#[derive(Debug, Default)]
pub struct MemoryCounter {
    live: AtomicU64,
    peak: AtomicU64,
    total_allocations: AtomicU64,
}

impl MemoryCounter {
    pub fn add(&self, bytes: u64) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
        self.total_allocations.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sub(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }
    pub fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }
    pub fn peak_bytes(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
    pub fn allocations(&self) -> u64 {
        self.total_allocations.load(Ordering::Relaxed)
    }
    pub fn reset_peak(&self) {
        self.peak.store(self.live_bytes(), Ordering::Relaxed);
    }
}

/// The device and everything created once per device.
pub struct GpuContext {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pub memory: Arc<MemoryCounter>,
    /// Largest byte range bound as one storage buffer; tests lower it to exercise chunking.
    max_binding_bytes: AtomicU64,
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

/// Every adapter the instance can see, in enumeration order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSummary::new(i, &a.get_info()))
        .collect()
}

impl GpuContext {
    pub fn new(choice: &AdapterChoice) -> Result<Arc<Self>> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            bail!("{NO_ADAPTER_HELP}");
        }
        let pick = match &choice.0 {
            Some(sel) => {
                if let Ok(i) = sel.parse::<usize>() {
                    if i >= adapters.len() {
                        bail!(
                            "adapter index {i} out of range: {} adapter(s) found (see `fsnn info --all`)",
                            adapters.len()
                        );
                    }
                    i
                } else {
                    let low = sel.to_lowercase();
                    adapters
                        .iter()
                        .position(|a| a.get_info().name.to_lowercase().contains(&low))
                        .ok_or_else(|| {
                            let names: Vec<String> =
                                adapters.iter().map(|a| a.get_info().name).collect();
                            anyhow!(
                                "no adapter name contains {sel:?}; found: {}",
                                names.join(", ")
                            )
                        })?
                }
            }
            None => (0..adapters.len())
                .max_by_key(|&i| {
                    let info = adapters[i].get_info();
                    // Prefer Vulkan/Metal/DX12 over GL at equal device type; earlier wins ties.
                    (rank(info.device_type), u32::MAX - i as u32)
                })
                .unwrap(),
        };
        let adapter = adapters.into_iter().nth(pick).unwrap();
        let info = AdapterSummary::new(pick, &adapter.get_info());
        let wanted = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            // The subgroup kernel variants (crate::variants) are candidates only with this.
            | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        // The adapter's real limits, not WebGPU's defaults (which cap buffers at 256 MiB).
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fsnn"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .with_context(|| format!("cannot open device on adapter {}", info.name))?;
        let max_binding = (limits.max_storage_buffer_binding_size as u64)
            .min(limits.max_buffer_size)
            // Round down so chunk boundaries stay aligned for every element type we bind.
            / 256
            * 256;
        Ok(Arc::new(Self {
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
            features,
            memory: Arc::new(MemoryCounter::default()),
            max_binding_bytes: AtomicU64::new(max_binding),
        }))
    }

    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding_bytes.load(Ordering::Relaxed)
    }

    /// Lowers the storage-binding cap (never above the device's) so chunked paths can be tested
    /// on any adapter.
    pub fn set_max_binding_bytes(&self, bytes: u64) {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        let cap = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        let b = bytes.min(cap) / align.max(4) * align.max(4);
        self.max_binding_bytes
            .store(b.max(align), Ordering::Relaxed);
    }

    pub fn has_pass_timestamps(&self) -> bool {
        self.features.contains(
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        )
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.adapter
            .features()
            .iter_names()
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Wait for all submitted work.
    pub fn wait(&self) {
        let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
    }
}
