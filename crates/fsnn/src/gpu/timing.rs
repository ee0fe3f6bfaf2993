//! Per-dispatch GPU timestamps, with a wall-clock fallback, and the reports built from them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::context::GpuContext;

pub(crate) struct TimestampSet {
    pub set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    pub capacity: u32,
}

impl TimestampSet {
    pub fn new(device: &wgpu::Device, capacity: u32) -> Self {
        let capacity = capacity.min(wgpu::QUERY_SET_MAX_QUERIES);
        Self {
            set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("fsnn timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: capacity,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("fsnn timestamp resolve"),
                size: capacity as u64 * 8,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            capacity,
        }
    }

    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder, count: u32) {
        enc.resolve_query_set(&self.set, 0..count, &self.resolve, 0);
    }

    pub fn read(&self, ctx: &GpuContext, count: usize) -> Vec<u64> {
        let size = count as u64 * 8;
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("fsnn timestamp readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(&self.resolve, 0, &staging, 0, size);
        ctx.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        ctx.wait();
        let v: Vec<u64> =
            bytemuck::pod_collect_to_vec(&slice.get_mapped_range().expect("timestamp map failed"));
        staging.unmap();
        v
    }
}

/// One dispatch on the GPU timeline (nanoseconds from the start of profiling).
#[derive(Debug, Clone, Serialize)]
pub struct KernelSpan {
    pub name: &'static str,
    pub start_ns: u64,
    pub dur_ns: u64,
    pub submit: usize,
}

/// What a stretch of profiled work cost.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Profile {
    pub enabled: bool,
    /// True when spans are GPU timestamps; false when each submit's wall time is split evenly.
    pub gpu_timestamps: bool,
    pub spans: Vec<KernelSpan>,
    pub submits: usize,
    /// Wall time of all submits, host encoding and waiting included.
    pub submit_wall_ns: u64,
    #[serde(skip)]
    cursor_ns: u64,
}

/// Per-kernel totals of a profile.
#[derive(Debug, Clone, Serialize)]
pub struct KernelTotal {
    pub name: String,
    pub calls: usize,
    pub total_ms: f64,
    pub mean_us: f64,
    pub share: f64,
}

impl Profile {
    pub(crate) fn record_submit(
        &mut self,
        names: &[&'static str],
        ticks: Option<&[u64]>,
        period_ns: f64,
        wall_ns: u64,
    ) {
        let submit = self.submits;
        self.submits += 1;
        self.submit_wall_ns += wall_ns;
        let base = self.cursor_ns;
        match ticks {
            Some(t) if !names.is_empty() => {
                let t0 = t[0];
                let mut last_end = 0;
                for (i, name) in names.iter().enumerate() {
                    let s = ((t[2 * i].saturating_sub(t0)) as f64 * period_ns) as u64;
                    let e = ((t[2 * i + 1].saturating_sub(t0)) as f64 * period_ns) as u64;
                    last_end = last_end.max(e);
                    self.spans.push(KernelSpan {
                        name,
                        start_ns: base + s,
                        dur_ns: e.saturating_sub(s),
                        submit,
                    });
                }
                self.cursor_ns = base + wall_ns.max(last_end);
            }
            _ => {
                // No timestamps inside passes: the submit's wall time, split evenly, is all we know.
                let n = names.len().max(1) as u64;
                for (i, name) in names.iter().enumerate() {
                    self.spans.push(KernelSpan {
                        name,
                        start_ns: base + wall_ns * i as u64 / n,
                        dur_ns: wall_ns / n,
                        submit,
                    });
                }
                self.cursor_ns = base + wall_ns;
            }
        }
    }

    pub fn kernel_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.dur_ns).sum()
    }

    /// Kernels by total time, largest first.
    pub fn totals(&self) -> Vec<KernelTotal> {
        let mut map: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
        for s in &self.spans {
            let e = map.entry(s.name).or_default();
            e.0 += 1;
            e.1 += s.dur_ns;
        }
        let all = self.kernel_ns().max(1) as f64;
        let mut v: Vec<KernelTotal> = map
            .into_iter()
            .map(|(name, (calls, ns))| KernelTotal {
                name: name.to_string(),
                calls,
                total_ms: ns as f64 / 1e6,
                mean_us: ns as f64 / 1e3 / calls as f64,
                share: ns as f64 / all,
            })
            .collect();
        v.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        v
    }

    /// A terminal table of [`Profile::totals`].
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {:>7} {:>11} {:>10} {:>7}\n",
            "kernel", "calls", "total ms", "mean µs", "share"
        );
        for t in self.totals() {
            s.push_str(&format!(
                "{:<28} {:>7} {:>11.3} {:>10.1} {:>6.1}%\n",
                t.name,
                t.calls,
                t.total_ms,
                t.mean_us,
                t.share * 100.0
            ));
        }
        s.push_str(&format!(
            "kernels {:.3} ms of {:.3} ms submit wall time over {} submit(s) ({})\n",
            self.kernel_ns() as f64 / 1e6,
            self.submit_wall_ns as f64 / 1e6,
            self.submits,
            if self.gpu_timestamps {
                "GPU timestamps"
            } else {
                "wall clock split per submit"
            }
        ));
        s
    }

    /// The spans as Chrome trace JSON (loadable in Perfetto and chrome://tracing).
    pub fn chrome_trace(&self) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .spans
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "cat": "kernel",
                    "ph": "X",
                    "ts": s.start_ns as f64 / 1e3,
                    "dur": s.dur_ns as f64 / 1e3,
                    "pid": 1,
                    "tid": 1,
                    "args": {"submit": s.submit},
                })
            })
            .collect();
        serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" })
    }
}
