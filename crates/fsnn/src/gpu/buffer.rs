//! GPU storage tensors (f32 or u32 words), their memory accounting, and a reuse pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::MemoryCounter;

/// A wgpu buffer whose size is counted in [`MemoryCounter`] while it lives.
pub struct GpuBuffer {
    pub raw: wgpu::Buffer,
    pub bytes: u64,
    memory: Arc<MemoryCounter>,
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        self.memory.sub(self.bytes);
    }
}

impl GpuBuffer {
    /// Refuses a size over the device's `max_buffer_size` with an error: wgpu would panic.
    pub fn new(
        device: &wgpu::Device,
        memory: &Arc<MemoryCounter>,
        bytes: u64,
        label: &str,
    ) -> anyhow::Result<Self> {
        // Zero-sized bindings are invalid; keep at least one word.
        let bytes = bytes.max(4).next_multiple_of(4);
        let max = device.limits().max_buffer_size;
        anyhow::ensure!(
            bytes <= max,
            "{label}: a buffer of {bytes} bytes exceeds the device's largest buffer of {max} bytes"
        );
        let raw = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        memory.add(bytes);
        Ok(Self {
            raw,
            bytes,
            memory: memory.clone(),
        })
    }
}

/// A flat array of 32-bit words on the GPU (f32 unless a kernel says otherwise) with a logical
/// shape. Cloning shares the buffer.
#[derive(Clone)]
pub struct Tensor {
    pub buf: Arc<GpuBuffer>,
    pub shape: Vec<usize>,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }
    /// Same buffer, another shape with the same number of elements.
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.len(),
            "reshape {:?} -> {:?}",
            self.shape,
            shape
        );
        Tensor {
            buf: self.buf.clone(),
            shape: shape.to_vec(),
        }
    }
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

/// Reuses freed buffers of the same byte size, so that a training step allocates nothing after
/// its first run.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<HashMap<u64, Vec<Arc<GpuBuffer>>>>,
}

impl BufferPool {
    pub fn take(&self, bytes: u64) -> Option<Arc<GpuBuffer>> {
        let bytes = bytes.max(4).next_multiple_of(4);
        self.free
            .lock()
            .unwrap()
            .get_mut(&bytes)
            .and_then(|v| v.pop())
    }
    pub fn give(&self, t: Tensor) {
        // Only recycle buffers nobody else still refers to.
        if let Ok(buf) = Arc::try_unwrap(t.buf) {
            let b = Arc::new(buf);
            self.free
                .lock()
                .unwrap()
                .entry(b.bytes)
                .or_default()
                .push(b);
        }
    }
}
