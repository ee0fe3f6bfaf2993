//! The GPU runtime: device, tensors, pipelines and the one place every dispatch goes through.
//!
//! Work is recorded, not run: [`Gpu::dispatch`] appends to a pending list, and [`Gpu::flush`]
//! encodes everything pending into one command buffer (consecutive dispatches share one compute
//! pass, where wgpu inserts the barriers) and submits it. Reads and writes from the host flush first,
//! so host and GPU see operations in program order.

pub mod backend;
pub mod buffer;
pub mod context;
pub mod timing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;

pub use buffer::{BufferPool, GpuBuffer, Tensor};
pub use context::{list_adapters, AdapterChoice, AdapterSummary, GpuContext, NO_ADAPTER_HELP};
pub use timing::{KernelSpan, Profile};

mod sources {
    include!(concat!(env!("OUT_DIR"), "/kernel_sources.rs"));
}

/// Names of all embedded kernels.
pub fn kernel_names() -> Vec<&'static str> {
    sources::KERNEL_SOURCES.iter().map(|k| k.0).collect()
}

/// The assembled WGSL of one kernel, as fsnn hands it to wgpu (whose native back ends compile it
/// with naga).
pub fn kernel_source(name: &str) -> Option<&'static str> {
    kernel_source_for(name, crate::shader_source::Compiler::Naga)
}

/// The assembled WGSL of one kernel for a given WGSL compiler: the same source, with the
/// directives that compiler needs (see [`crate::shader_source::for_compiler`]). Tint's text is the
/// one a Dawn- or browser-hosted WebGPU must be given.
pub fn kernel_source_for(
    name: &str,
    compiler: crate::shader_source::Compiler,
) -> Option<&'static str> {
    sources::KERNEL_SOURCES
        .iter()
        .find(|k| k.0 == name)
        .map(|k| match compiler {
            crate::shader_source::Compiler::Naga => k.1,
            crate::shader_source::Compiler::Tint => k.2,
        })
}

/// The WGSL compiler behind a wgpu back end: a browser's WebGPU compiles the text itself (Tint in
/// Chrome and Edge), wgpu's native back ends translate it with naga.
pub fn wgsl_compiler(backend: wgpu::Backend) -> crate::shader_source::Compiler {
    match backend {
        wgpu::Backend::BrowserWebGpu => crate::shader_source::Compiler::Tint,
        _ => crate::shader_source::Compiler::Naga,
    }
}

/// Whether a kernel uses subgroup operations, so that a device needs the subgroup feature
/// (`wgpu::Features::SUBGROUP`, WebGPU's `subgroups`) to build it.
pub fn kernel_uses_subgroups(name: &str) -> Option<bool> {
    sources::KERNEL_SOURCES
        .iter()
        .find(|k| k.0 == name)
        .map(|k| k.3)
}

/// Workgroup size of the 1-D kernels (must match `WG` in shaders/shared/common.wgsl).
pub const WG: u32 = 64;

/// Uniform parameters of one dispatch: 32-bit words in the order of the kernel's `Params` struct.
#[derive(Default, Clone)]
pub struct Params(pub Vec<u32>);

impl Params {
    pub fn new() -> Self {
        Self(Vec::with_capacity(16))
    }
    pub fn u(mut self, v: impl TryInto<u32, Error = impl std::fmt::Debug>) -> Self {
        self.0
            .push(v.try_into().expect("parameter does not fit in u32"));
        self
    }
    pub fn f(mut self, v: f32) -> Self {
        self.0.push(v.to_bits());
        self
    }
}

/// A range of a tensor's words bound as one storage buffer.
#[derive(Clone)]
pub struct Binding {
    pub buf: Arc<GpuBuffer>,
    /// Byte offset, a multiple of the device's storage offset alignment.
    pub offset: u64,
    pub size: u64,
}

impl Binding {
    pub fn whole(t: &Tensor) -> Self {
        Self {
            buf: t.buf.clone(),
            offset: 0,
            size: t.buf.bytes,
        }
    }
}

enum Op {
    Dispatch {
        name: &'static str,
        params_offset: u64,
        params_size: u64,
        bindings: Vec<Binding>,
        groups: [u32; 3],
    },
    Copy {
        src: Arc<GpuBuffer>,
        src_offset: u64,
        dst: Arc<GpuBuffer>,
        dst_offset: u64,
        size: u64,
    },
    Clear {
        buf: Arc<GpuBuffer>,
        offset: u64,
        size: u64,
    },
    Readback {
        src: Arc<GpuBuffer>,
        src_offset: u64,
        dst: wgpu::Buffer,
        size: u64,
    },
}

struct Pending {
    ops: Vec<Op>,
    params: Vec<u8>,
    dispatches: usize,
}

struct ParamsArena {
    buffer: Option<wgpu::Buffer>,
    capacity: u64,
}

type MapReceiver = std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>;

/// A read in flight (see [`Gpu::read_async`]).
pub struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    index: Option<wgpu::SubmissionIndex>,
    rx: MapReceiver,
}

impl PendingRead {
    /// Waits for the submission that carried the read (not for later ones) and returns the values.
    pub fn wait(self, gpu: &Gpu) -> Vec<f32> {
        let _ = gpu.ctx.device.poll(wgpu::PollType::Wait {
            submission_index: self.index,
            timeout: None,
        });
        bytemuck::pod_collect_to_vec(&gpu.finish_read(self.staging, self.size, self.rx))
    }
}

/// Most dispatches recorded into one command buffer before an automatic flush.
const MAX_DISPATCHES_PER_SUBMIT: usize = 2048;

/// How the kernels that can share their loads across a subgroup run: the `_coop` kernels of the
/// solver and the event-driven conv step (plain kernels otherwise), and the `unshared` flag of
/// every `_coop` kernel, the GEMM and convolution variants included. On a CPU driver each
/// per-invocation load is a scalar load per SIMD lane, so sharing pays (BENCHMARKS, "what a
/// kernel costs on lavapipe"); GPUs run the plain kernels, which nothing here has measured
/// against the shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// The plain kernels (the coop GEMM and convolution variants, where chosen, still share).
    Plain,
    /// The `_coop` kernels, sharing where the subgroup allows (the default on CPU adapters with
    /// subgroups).
    Shared,
    /// The `_coop` kernels on the path they take where subgroups cannot share.
    Unshared,
}

impl Sharing {
    fn default_for(ctx: &GpuContext) -> Self {
        if ctx.features.contains(wgpu::Features::SUBGROUP) && ctx.info.device_type == "Cpu" {
            Sharing::Shared
        } else {
            Sharing::Plain
        }
    }

    /// The `unshared` word of a `_coop` kernel's parameters.
    pub fn unshared_flag(self) -> u32 {
        (self == Sharing::Unshared) as u32
    }
}

/// How the fused linear event kernel walks the previous step's spikes: the bit set itself
/// (`fc_event_sim.wgsl`), or an ordered list of the inputs that spiked, compacted from it each
/// step (`fc_event_sim_list.wgsl`). Both add the same rows in the same order; which is faster
/// depends on the adapter (a CPU driver pays a per-lane load per listed spike; a GPU can keep
/// several of a list's independent row loads in flight), so the forward simulation's `auto`
/// measurement chooses (see [`crate::kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpikeWalk {
    #[default]
    Bits,
    List,
}

impl SpikeWalk {
    pub const ALL: [SpikeWalk; 2] = [SpikeWalk::Bits, SpikeWalk::List];

    pub fn name(self) -> &'static str {
        match self {
            SpikeWalk::Bits => "bits",
            SpikeWalk::List => "list",
        }
    }
}

/// How the event-driven conv step lays out its work: 8 output channels and every 8th column per
/// invocation (`conv_event_sim[_coop].wgsl`, plain or coop by the recorder's [`Sharing`]; any row
/// width), or one output channel per invocation with the row's columns walked together and
/// summed in workgroup memory (`conv_event_sim_lanes.wgsl`, written for GPUs: uniform spike
/// walks, coalesced weight and state accesses; rows of at most 32 columns, wider ones run the
/// first form). Both give bit-identical results; the forward simulation's `auto` measurement
/// chooses (see [`crate::kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvEventForm {
    #[default]
    Phases,
    Lanes,
}

impl ConvEventForm {
    pub const ALL: [ConvEventForm; 2] = [ConvEventForm::Phases, ConvEventForm::Lanes];

    pub fn name(self) -> &'static str {
        match self {
            ConvEventForm::Phases => "phases",
            ConvEventForm::Lanes => "lanes",
        }
    }
}

pub struct Gpu {
    pub ctx: Arc<GpuContext>,
    pub pool: BufferPool,
    pipelines: Mutex<HashMap<&'static str, Arc<wgpu::ComputePipeline>>>,
    pending: Mutex<Pending>,
    arena: Mutex<ParamsArena>,
    profile: Mutex<Profile>,
    timestamps: Mutex<Option<timing::TimestampSet>>,
    /// Mappable buffers for reads, by size, reused so steady-state steps create none.
    staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// The kernel variant each family dispatches (see [`crate::variants`]).
    variants: Mutex<crate::variants::Chosen>,
    sharing: Mutex<Sharing>,
    spike_walk: Mutex<SpikeWalk>,
    conv_event_form: Mutex<ConvEventForm>,
}

impl Gpu {
    pub fn new(choice: &AdapterChoice) -> Result<Self> {
        Ok(Self::from_context(GpuContext::new(choice)?))
    }

    pub fn from_context(ctx: Arc<GpuContext>) -> Self {
        Self {
            pool: BufferPool::default(),
            pipelines: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending {
                ops: Vec::new(),
                params: Vec::new(),
                dispatches: 0,
            }),
            arena: Mutex::new(ParamsArena {
                buffer: None,
                capacity: 0,
            }),
            profile: Mutex::new(Profile::default()),
            timestamps: Mutex::new(None),
            staging: Mutex::new(HashMap::new()),
            variants: Mutex::new(crate::variants::initial(&ctx.info, &ctx.features)),
            sharing: Mutex::new(Sharing::default_for(&ctx)),
            spike_walk: Mutex::new(SpikeWalk::default()),
            conv_event_form: Mutex::new(ConvEventForm::default()),
            ctx,
        }
    }

    /// The family's variant on this recorder (its overall choice; see [`Gpu::variant_at`]).
    pub fn variant(&self, f: crate::variants::Family) -> crate::variants::Variant {
        self.variants.lock().unwrap().get(f)
    }

    /// The variant `ops` dispatches for one problem of a family on this recorder (per shape where
    /// `fsnn tune` measured; see [`crate::variants::Chosen::get_at`]).
    pub fn variant_at(
        &self,
        f: crate::variants::Family,
        p: &crate::variants::Problem,
    ) -> crate::variants::Variant {
        self.variants.lock().unwrap().get_at(f, p)
    }

    /// The per-shape choices of family `f` on this recorder (empty unless measured and not
    /// forced).
    pub fn variant_shapes(&self, f: crate::variants::Family) -> Vec<crate::variants::ShapeChoice> {
        self.variants.lock().unwrap().shapes(f).to_vec()
    }

    /// Applies a measurement of family `f` to this recorder: its per-shape choices.
    pub fn set_measured_variants(
        &self,
        f: crate::variants::Family,
        fc: &crate::variants::FamilyChoice,
    ) {
        self.variants
            .lock()
            .unwrap()
            .set_measured(f, fc, &self.ctx.features);
    }

    /// Makes this recorder dispatch variant `v` for family `f` at every shape (other recorders
    /// keep theirs).
    pub fn set_variant(&self, f: crate::variants::Family, v: crate::variants::Variant) {
        assert!(
            f.candidates().contains(&v) && v.supported(&self.ctx.features),
            "{f} has no {v} variant on this device"
        );
        self.variants.lock().unwrap().set(f, v);
    }

    /// How this recorder runs the kernels that can share their loads across a subgroup.
    pub fn sharing(&self) -> Sharing {
        *self.sharing.lock().unwrap()
    }

    /// Makes this recorder run the shared-load kernels as `s` (other recorders keep theirs);
    /// tests use it to cover every path on one adapter.
    pub fn set_sharing(&self, s: Sharing) {
        assert!(
            s == Sharing::Plain || self.ctx.features.contains(wgpu::Features::SUBGROUP),
            "{s:?} needs subgroup operations, which this device lacks"
        );
        *self.sharing.lock().unwrap() = s;
    }

    /// How this recorder's linear event kernel walks spikes.
    pub fn spike_walk(&self) -> SpikeWalk {
        *self.spike_walk.lock().unwrap()
    }

    /// Makes this recorder's linear event kernel walk spikes as `w` (other recorders keep theirs).
    pub fn set_spike_walk(&self, w: SpikeWalk) {
        *self.spike_walk.lock().unwrap() = w;
    }

    /// How this recorder's event-driven conv step lays out its work.
    pub fn conv_event_form(&self) -> ConvEventForm {
        *self.conv_event_form.lock().unwrap()
    }

    /// Makes this recorder's event-driven conv step use `f` (other recorders keep theirs).
    pub fn set_conv_event_form(&self, f: ConvEventForm) {
        *self.conv_event_form.lock().unwrap() = f;
    }

    // ---------------------------------------------------------------- tensors

    /// A zero-filled tensor (from the pool when a buffer of that size is free).
    pub fn zeros(&self, shape: &[usize]) -> Tensor {
        let t = self.uninit(shape);
        self.fill_zero(&t);
        t
    }

    /// A tensor whose contents are whatever the reused buffer held. A size over the device's
    /// largest buffer panics with a message saying so; callers that can report it use
    /// [`Gpu::try_uninit`], and runs check sizes up front (`checks::fits_gpu`).
    pub fn uninit(&self, shape: &[usize]) -> Tensor {
        self.try_uninit(shape)
            .unwrap_or_else(|e| panic!("{e:#} (shape {shape:?})"))
    }

    /// [`Gpu::uninit`], with a size the device cannot allocate as an error.
    pub fn try_uninit(&self, shape: &[usize]) -> Result<Tensor> {
        let n = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| anyhow::anyhow!("tensor of shape {shape:?}: size overflows"))?;
        let bytes = n.max(4);
        let buf = match self.pool.take(bytes) {
            Some(b) => b,
            None => Arc::new(GpuBuffer::new(
                &self.ctx.device,
                &self.ctx.memory,
                bytes,
                "fsnn tensor",
            )?),
        };
        Ok(Tensor {
            buf,
            shape: shape.to_vec(),
        })
    }

    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Tensor {
        let t = self.uninit(shape);
        self.write(&t, data);
        t
    }

    pub fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Tensor {
        let t = self.uninit(shape);
        self.write_words(&t, 0, bytemuck::cast_slice(data));
        t
    }

    /// Returns a tensor's buffer to the pool for reuse.
    pub fn recycle(&self, t: Tensor) {
        self.pool.give(t);
    }

    pub fn write(&self, t: &Tensor, data: &[f32]) {
        assert_eq!(
            data.len(),
            t.len(),
            "upload size mismatch for shape {:?}",
            t.shape
        );
        self.write_words(t, 0, bytemuck::cast_slice(data));
    }

    /// Writes raw bytes at a byte offset, after all recorded work that precedes it.
    pub fn write_words(&self, t: &Tensor, byte_offset: u64, bytes: &[u8]) {
        self.flush_if_pending();
        if !bytes.is_empty() {
            self.ctx.queue.write_buffer(&t.buf.raw, byte_offset, bytes);
        }
    }

    pub fn read(&self, t: &Tensor) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(&t.buf, 0, t.bytes()))
    }

    pub fn read_u32(&self, t: &Tensor) -> Vec<u32> {
        bytemuck::pod_collect_to_vec(&self.read_bytes(&t.buf, 0, t.bytes()))
    }

    /// Reads `size` bytes at `offset` (both multiples of 4) after all recorded work.
    pub fn read_bytes(&self, buf: &Arc<GpuBuffer>, offset: u64, size: u64) -> Vec<u8> {
        if size == 0 {
            self.flush();
            return Vec::new();
        }
        // The copy into a (reused) staging buffer rides in the same submit as the pending work.
        let staging = self.staging_buffer(size);
        self.pending.lock().unwrap().ops.push(Op::Readback {
            src: buf.clone(),
            src_offset: offset,
            dst: staging.clone(),
            size,
        });
        self.flush();
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.ctx.wait();
        self.finish_read(staging, size, rx)
    }

    fn staging_buffer(&self, size: u64) -> wgpu::Buffer {
        self.staging
            .lock()
            .unwrap()
            .get_mut(&size)
            .and_then(|v| v.pop())
            .unwrap_or_else(|| {
                self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fsnn readback"),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })
    }

    fn finish_read(&self, staging: wgpu::Buffer, size: u64, rx: MapReceiver) -> Vec<u8> {
        rx.recv()
            .expect("map callback dropped")
            .expect("buffer map failed");
        let out = staging
            .slice(..)
            .get_mapped_range()
            .expect("readback map failed")
            .to_vec();
        staging.unmap();
        self.staging
            .lock()
            .unwrap()
            .entry(size)
            .or_default()
            .push(staging);
        out
    }

    /// Starts reading `count` f32 values of `t` from element `elem`: records the copy after all
    /// recorded work and submits without waiting, so the host can record more work while this
    /// runs. [`PendingRead::wait`] waits for this submission only.
    pub fn read_async(&self, t: &Tensor, elem: usize, count: usize) -> PendingRead {
        assert!(count > 0 && elem + count <= t.len());
        let size = count as u64 * 4;
        let staging = self.staging_buffer(size);
        self.pending.lock().unwrap().ops.push(Op::Readback {
            src: t.buf.clone(),
            src_offset: elem as u64 * 4,
            dst: staging.clone(),
            size,
        });
        let index = self.submit(false);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        PendingRead {
            staging,
            size,
            index,
            rx,
        }
    }

    /// Bytes of GPU buffers alive now, and the peak since the last [`Gpu::reset_peak_memory`].
    pub fn memory_bytes(&self) -> (u64, u64) {
        (self.ctx.memory.live_bytes(), self.ctx.memory.peak_bytes())
    }

    pub fn reset_peak_memory(&self) {
        self.ctx.memory.reset_peak();
    }

    // --------------------------------------------------------------- bindings

    /// The byte window `[elem_start, elem_start + elem_count)` of `t`, bound from the nearest
    /// aligned offset below. Returns the binding and the element offset of `elem_start` inside it.
    pub fn window(&self, t: &Tensor, elem_start: usize, elem_count: usize) -> (Binding, u32) {
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        let start = elem_start as u64 * 4;
        let base = start / align * align;
        let end = ((elem_start + elem_count) as u64 * 4).max(start + 4);
        let size = (end - base).next_multiple_of(4).min(t.buf.bytes - base);
        assert!(
            size <= self.ctx.max_binding_bytes() || base == 0 && size <= t.buf.bytes,
            "window of {size} bytes exceeds the binding limit"
        );
        (
            Binding {
                buf: t.buf.clone(),
                offset: base,
                size,
            },
            ((start - base) / 4) as u32,
        )
    }

    /// The whole tensor as one binding, refusing (rather than truncating) one over the limit.
    pub fn bind(&self, t: &Tensor) -> Binding {
        assert!(
            t.bytes() <= self.ctx.max_binding_bytes(),
            "tensor of {} bytes (shape {:?}) exceeds the storage binding limit of {} bytes: this \
             kernel must be called through a chunked path",
            t.bytes(),
            t.shape,
            self.ctx.max_binding_bytes()
        );
        Binding {
            buf: t.buf.clone(),
            offset: 0,
            size: t.bytes().max(4),
        }
    }

    /// How many rows of `row_words` words fit in one binding, the start of every chunk staying
    /// aligned.
    pub fn rows_per_binding(&self, row_words: usize) -> usize {
        let max = self.ctx.max_binding_bytes() as usize;
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as usize;
        let row_bytes = (row_words * 4).max(4);
        // Leave one alignment unit for the window's rounding down.
        ((max.saturating_sub(align)) / row_bytes).max(1)
    }

    // ------------------------------------------------------------- recording

    fn pipeline(&self, name: &'static str) -> Arc<wgpu::ComputePipeline> {
        let mut cache = self.pipelines.lock().unwrap();
        if let Some(p) = cache.get(name) {
            return p.clone();
        }
        let compiler = wgsl_compiler(self.ctx.adapter.get_info().backend);
        let src =
            kernel_source_for(name, compiler).unwrap_or_else(|| panic!("no kernel named {name}"));
        let module = self
            .ctx
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let p = Arc::new(self.ctx.device.create_compute_pipeline(
            &wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            },
        ));
        cache.insert(name, p.clone());
        p
    }

    /// Records one dispatch of kernel `name`. Binding 0 is the uniform `params`; bindings 1.. are
    /// the storage buffers in order.
    pub fn dispatch(
        &self,
        name: &'static str,
        params: Params,
        bindings: Vec<Binding>,
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        assert!(
            groups.iter().all(|&g| g <= max),
            "{name}: dispatch {groups:?} over the device limit {max}"
        );
        // Make sure the pipeline exists before recording (compilation errors surface here).
        self.pipeline(name);
        let align = self.ctx.limits.min_uniform_buffer_offset_alignment as u64;
        let mut words = params.0;
        // Uniform structs are sized in multiples of 16 bytes.
        while !words.len().is_multiple_of(4) || words.is_empty() {
            words.push(0);
        }
        let flush_now = {
            let mut p = self.pending.lock().unwrap();
            let offset = (p.params.len() as u64).next_multiple_of(align);
            p.params.resize(offset as usize, 0);
            p.params.extend_from_slice(bytemuck::cast_slice(&words));
            p.ops.push(Op::Dispatch {
                name,
                params_offset: offset,
                params_size: words.len() as u64 * 4,
                bindings,
                groups,
            });
            p.dispatches += 1;
            p.dispatches >= MAX_DISPATCHES_PER_SUBMIT
        };
        if flush_now {
            self.flush();
        }
    }

    /// A 1-D dispatch over `n` invocations of `WG` threads, folded into two dimensions when it
    /// exceeds the per-dimension limit.
    pub fn groups_1d(&self, n: usize) -> [u32; 3] {
        let groups = n.div_ceil(WG as usize).max(1) as u64;
        let max = self.ctx.limits.max_compute_workgroups_per_dimension as u64;
        if groups <= max {
            [groups as u32, 1, 1]
        } else {
            let y = groups.div_ceil(max);
            [groups.div_ceil(y) as u32, y as u32, 1]
        }
    }

    pub fn copy(&self, src: &Tensor, src_elem: usize, dst: &Tensor, dst_elem: usize, count: usize) {
        assert!(src_elem + count <= src.len() && dst_elem + count <= dst.len());
        if count == 0 {
            return;
        }
        self.pending.lock().unwrap().ops.push(Op::Copy {
            src: src.buf.clone(),
            src_offset: src_elem as u64 * 4,
            dst: dst.buf.clone(),
            dst_offset: dst_elem as u64 * 4,
            size: count as u64 * 4,
        });
    }

    pub fn fill_zero(&self, t: &Tensor) {
        self.pending.lock().unwrap().ops.push(Op::Clear {
            buf: t.buf.clone(),
            offset: 0,
            size: t.buf.bytes,
        });
    }

    fn flush_if_pending(&self) {
        if !self.pending.lock().unwrap().ops.is_empty() {
            self.flush();
        }
    }

    /// Submits everything recorded so far and waits for it. With profiling on, each dispatch's
    /// GPU time is recorded under its kernel name.
    pub fn flush(&self) {
        self.submit(true);
    }

    /// Submits everything recorded so far, waiting for it when `wait` (always when profiling,
    /// whose timestamps are read back at once).
    fn submit(&self, wait: bool) -> Option<wgpu::SubmissionIndex> {
        let (ops, params) = {
            let mut p = self.pending.lock().unwrap();
            p.dispatches = 0;
            (std::mem::take(&mut p.ops), std::mem::take(&mut p.params))
        };
        if ops.is_empty() {
            return None;
        }
        let device = &self.ctx.device;
        let wall = Instant::now();
        let mut arena = self.arena.lock().unwrap();
        if !params.is_empty() {
            if arena.capacity < params.len() as u64 {
                let cap = (params.len() as u64).next_power_of_two().max(64 * 1024);
                arena.buffer = Some(device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("fsnn params"),
                    size: cap,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
                arena.capacity = cap;
            }
            self.ctx
                .queue
                .write_buffer(arena.buffer.as_ref().unwrap(), 0, &params);
        }
        let profiling = self.profile.lock().unwrap().enabled;
        let use_ts = profiling && self.ctx.has_pass_timestamps();
        let n_dispatch = ops
            .iter()
            .filter(|o| matches!(o, Op::Dispatch { .. }))
            .count();
        let mut ts_guard = self.timestamps.lock().unwrap();
        if use_ts {
            let need = (n_dispatch * 2) as u32;
            if ts_guard.as_ref().map(|t| t.capacity < need).unwrap_or(true) {
                *ts_guard = Some(timing::TimestampSet::new(device, need.max(256)));
            }
        }
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("fsnn step"),
        });
        let mut names: Vec<&'static str> = Vec::with_capacity(n_dispatch);
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                Op::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    size,
                } => {
                    enc.copy_buffer_to_buffer(&src.raw, *src_offset, &dst.raw, *dst_offset, *size);
                    i += 1;
                }
                Op::Readback {
                    src,
                    src_offset,
                    dst,
                    size,
                } => {
                    enc.copy_buffer_to_buffer(&src.raw, *src_offset, dst, 0, *size);
                    i += 1;
                }
                Op::Clear { buf, offset, size } => {
                    enc.clear_buffer(&buf.raw, *offset, Some(*size));
                    i += 1;
                }
                Op::Dispatch { .. } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("fsnn kernels"),
                        timestamp_writes: None,
                    });
                    while let Some(Op::Dispatch {
                        name,
                        params_offset,
                        params_size,
                        bindings,
                        groups,
                    }) = ops.get(i)
                    {
                        let pipeline = self.pipeline(name);
                        let layout = pipeline.get_bind_group_layout(0);
                        let mut entries = Vec::with_capacity(bindings.len() + 1);
                        entries.push(wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: arena.buffer.as_ref().unwrap(),
                                offset: *params_offset,
                                size: wgpu::BufferSize::new(*params_size),
                            }),
                        });
                        for (k, b) in bindings.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry {
                                binding: k as u32 + 1,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &b.buf.raw,
                                    offset: b.offset,
                                    size: wgpu::BufferSize::new(b.size),
                                }),
                            });
                        }
                        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(name),
                            layout: &layout,
                            entries: &entries,
                        });
                        pass.set_pipeline(&pipeline);
                        pass.set_bind_group(0, &bg, &[]);
                        if use_ts {
                            let q = names.len() as u32 * 2;
                            pass.write_timestamp(&ts_guard.as_ref().unwrap().set, q);
                            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                            pass.write_timestamp(&ts_guard.as_ref().unwrap().set, q + 1);
                        } else {
                            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                        }
                        names.push(name);
                        i += 1;
                    }
                }
            }
        }
        if use_ts {
            ts_guard
                .as_ref()
                .unwrap()
                .resolve(&mut enc, names.len() as u32 * 2);
        }
        let index = self.ctx.queue.submit([enc.finish()]);
        if wait || profiling {
            self.ctx.wait();
        }
        drop(arena);
        let wall_ns = wall.elapsed().as_nanos() as u64;
        if profiling {
            let ticks = if use_ts {
                Some(ts_guard.as_ref().unwrap().read(&self.ctx, names.len() * 2))
            } else {
                None
            };
            let period = self.ctx.queue.get_timestamp_period() as f64;
            self.profile
                .lock()
                .unwrap()
                .record_submit(&names, ticks.as_deref(), period, wall_ns);
        }
        Some(index)
    }

    // -------------------------------------------------------------- profiling

    /// Turns per-kernel timing on or off; turning it on clears what was recorded.
    pub fn set_profiling(&self, on: bool) {
        let mut p = self.profile.lock().unwrap();
        *p = Profile::default();
        p.enabled = on;
        p.gpu_timestamps = on && self.ctx.has_pass_timestamps();
    }

    /// Takes what was recorded since profiling was turned on (or last taken).
    pub fn take_profile(&self) -> Profile {
        self.flush();
        let mut p = self.profile.lock().unwrap();
        let enabled = p.enabled;
        let ts = p.gpu_timestamps;
        let out = std::mem::take(&mut *p);
        p.enabled = enabled;
        p.gpu_timestamps = ts;
        out
    }
}
