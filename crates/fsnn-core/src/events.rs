//! Memory layouts of the event-driven feedback ops as the WGSL kernels lay them out: spike bit
//! sets of 32 neurons a word, `W_effᵀ` rows padded to whole vec4s. They are the defaults of the
//! [`crate::Backend`] layout functions and what the plain twins (`fsnn::cpu`) read; a backend
//! may choose its own.

use crate::shapes::ConvShape;

/// Words of a bit set of `n` spikes.
pub fn spike_words(n: usize) -> usize {
    n.div_ceil(32)
}

/// Neurons per sample the fused linear event kernel can hold (`4 · WG · PER` of fc_event_sim.wgsl).
pub const FC_EVENT_MAX_NEURONS: usize = 1024;

/// Row stride of the fused linear event kernel's `W_effᵀ`: rows padded with zeros to whole vec4s.
pub fn fc_event_ld(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Words of the spike bit sets of a conv layer's output: one set per (sample, channel, row).
pub fn conv_spike_words(batch: usize, channels: usize, h: usize, w: usize) -> usize {
    batch * channels * h * w.div_ceil(32)
}

/// Row stride of the conv event step's transposed weight: output channels padded to whole vec4s.
pub fn conv_event_ld(cout: usize) -> usize {
    cout.next_multiple_of(4)
}

/// Whether the conv event step handles a feedback convolution of this shape.
pub fn conv_event_supported(s: &ConvShape) -> bool {
    s.stride == 1 && s.kw <= 32 && s.pad < 32 && s.ow() <= 256 && s.ow() > 0 && s.oh() > 0
}
