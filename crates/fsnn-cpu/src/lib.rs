//! The native CPU backend: [`fsnn_core::Backend`] on host memory, for machines without a GPU.
//!
//! On such a machine the WGSL kernels run through lavapipe, which reaches about 8 % of what the
//! cores can do (22 GFLOP/s against PyTorch's 274 on 2 AVX-512 cores). Here every op runs natively:
//!
//! - matrix products through `matrixmultiply` (runtime AVX/FMA/AVX-512 dispatch, its own
//!   threading): 259 GFLOP/s at 1024³ on those 2 cores against 163 for the `gemm` crate that
//!   candle uses, and exact `beta = 0` semantics (C is not read), as the GPU kernels;
//! - convolutions and both gradients as im2col (or col2im) around the same GEMM ([`conv`]);
//! - the event-driven feedback adds, for the spiking inputs only, the `W_effᵀ` rows (linear) or
//!   each tap's output-channel row (conv) ([`events`]), bit-identical to the plain twins;
//! - everything else through the plain twins of `fsnn_core::twins`, the oracle the GPU kernels
//!   are tested against too.
//!
//! Determinism: `matrixmultiply` splits the output among threads, so every element is reduced in
//! the same order whatever the thread count or timing; the other ops are sequential. The same
//! seed gives the same bits, which `--resume` relies on.
//!
//! # Soundness of the tensors
//!
//! Ops take their outputs as shared references (the GPU-style [`fsnn_core::Backend`] contract),
//! so a [`CpuTensor`] holds its words in an `UnsafeCell`. That is sound because the backend runs
//! one op at a time, to completion, on the calling thread (the GEMM's worker threads only touch
//! the slices that op hands them), and because every op copies an input that shares its buffer
//! with one of its outputs before writing (see [`Cpu`]'s `input` helper).

mod backend;
pub mod conv;
pub mod events;
pub mod solver;

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fsnn_core::TensorOps;

/// Bytes of host tensors alive now, and the most alive at once since the last reset.
#[derive(Default)]
struct Memory {
    now: AtomicU64,
    peak: AtomicU64,
}

impl Memory {
    fn add(&self, b: u64) {
        let now = self.now.fetch_add(b, Ordering::Relaxed) + b;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }
    fn sub(&self, b: u64) {
        self.now.fetch_sub(b, Ordering::Relaxed);
    }
}

/// A tensor's words (f32, or u32 bit patterns for the ops that say so).
pub struct Buffer {
    words: UnsafeCell<Vec<f32>>,
    memory: Arc<Memory>,
}

// SAFETY: see the module docs: ops run one at a time to completion, inputs that alias outputs are
// copied first, and no reference into a buffer outlives the op that made it.
unsafe impl Sync for Buffer {}
unsafe impl Send for Buffer {}

impl Drop for Buffer {
    fn drop(&mut self) {
        self.memory.sub(self.words.get_mut().len() as u64 * 4);
    }
}

/// A host tensor: a shared buffer and a logical shape (cloning shares the buffer).
#[derive(Clone)]
pub struct CpuTensor {
    buf: Arc<Buffer>,
    shape: Vec<usize>,
}

impl TensorOps for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn reshape(&self, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape {:?} -> {:?}",
            self.shape,
            shape
        );
        Self {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        }
    }
    fn prefix(&self, len: usize) -> Self {
        assert!(len <= self.capacity(), "prefix {len} of {:?}", self.shape);
        Self {
            buf: self.buf.clone(),
            shape: vec![len],
        }
    }
    fn same_buffer(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

impl CpuTensor {
    fn capacity(&self) -> usize {
        // SAFETY: reading the length only; no op is running while the caller holds `&self`.
        unsafe { (*self.buf.words.get()).len() }
    }
    /// The whole buffer, read-only.
    fn all(&self) -> &[f32] {
        // SAFETY: module docs.
        unsafe { &*self.buf.words.get() }
    }
    /// The whole buffer, for writing.
    #[allow(clippy::mut_from_ref)]
    fn all_mut(&self) -> &mut [f32] {
        // SAFETY: module docs.
        unsafe { &mut *self.buf.words.get() }
    }
    /// The tensor's elements, read-only.
    fn r(&self) -> &[f32] {
        &self.all()[..self.len()]
    }
    /// The tensor's elements, for writing.
    #[allow(clippy::mut_from_ref)]
    fn w(&self) -> &mut [f32] {
        let n = self.len();
        &mut self.all_mut()[..n]
    }
    fn r_u32(&self) -> &[u32] {
        bytemuck::cast_slice(self.r())
    }
    #[allow(clippy::mut_from_ref)]
    fn w_u32(&self) -> &mut [u32] {
        bytemuck::cast_slice_mut(self.w())
    }
}

/// The CPU as a compute backend. Cheap to create; tensors count their bytes against it.
pub struct Cpu {
    threads: usize,
    memory: Arc<Memory>,
    conv: Mutex<conv::ConvScratch>,
    fb: Mutex<Vec<f32>>,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Cpu {
    /// All cores unless `threads` says otherwise. `threads` sets fsnn's own splits; the GEMM's
    /// pool is `matrixmultiply`'s, sized once per process from `MATMUL_NUM_THREADS` (default: all
    /// cores), which a program sets at startup, before any thread exists (the CLI's `--threads`
    /// does).
    pub fn new(threads: Option<usize>) -> Self {
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        Self {
            threads,
            memory: Arc::default(),
            conv: Mutex::default(),
            fb: Mutex::default(),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn alloc(&self, shape: &[usize]) -> CpuTensor {
        let n: usize = shape.iter().product();
        self.memory.add(n as u64 * 4);
        CpuTensor {
            buf: Arc::new(Buffer {
                words: UnsafeCell::new(vec![0.0; n]),
                memory: self.memory.clone(),
            }),
            shape: shape.to_vec(),
        }
    }
}

/// The processor's model name, where the OS says it (Linux: /proc/cpuinfo).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
