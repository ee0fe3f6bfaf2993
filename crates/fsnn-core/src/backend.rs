//! The backend seam: everything the network, the adjoint solver, the spectral norm and the
//! trainer ask of a compute device, as one trait.
//!
//! # Why a trait with an associated tensor type
//!
//! Two designs were on the table: Burn's (a `Backend` trait with its own tensor type; model code
//! generic over it; one runtime switch where the model is built) and candle's (one `Device` /
//! `Storage` enum matched inside every op). This is Burn's, for three reasons:
//!
//! - **Mixing devices cannot compile.** A `Network<Gpu>` holds `Gpu` tensors only; passing a CPU
//!   tensor to a GPU op is a type error, not a runtime panic deep in a training step.
//! - **Zero-cost dispatch.** Each op is a direct (inlinable) call into the backend; there is no
//!   per-op `match` over devices, and a backend adds no variant to anybody else's enum.
//! - **One switch, at the top.** The CLI (or a library user) picks the backend once and calls the
//!   generic `build`/`train` with it; everything below is monomorphised for that backend.
//!
//! # The contract
//!
//! Ops mirror the GPU launch layer (`fsnn::ops`) one for one: same names, same argument order,
//! `&self` in place of the GPU and `&Self::Tensor` for every operand. Outputs are passed in as
//! tensors the caller allocated (GPU style, no allocation in the steady state); a backend whose
//! tensors live in host memory uses interior mutability. Work may be recorded and run later: a
//! backend must make host reads ([`Backend::read`] and friends) see every op recorded before
//! them, in program order. The plain CPU twins (`fsnn::cpu`) define what every op computes.
//!
//! The event-driven feedback ops own their memory layouts: the spike bit sets and the padded
//! `W_effᵀ` are sized through the associated functions below ([`Backend::spike_words`],
//! [`Backend::fc_event_ld`], ...), so a backend may pick its own (defaults: the WGSL kernels').

use crate::events;
use crate::shapes::{BnShape, ConvShape, ConvTShape, FcEventSim, NeuronStep, Op, SolverIter};
use crate::shapes::{SolverLayout, SolverVectors};

/// What model code may ask of a backend's tensor: a flat array of 32-bit words (f32 unless an
/// op says u32) with a logical shape. Cloning shares the storage.
pub trait TensorOps: Clone + Send + Sync {
    fn shape(&self) -> &[usize];
    fn len(&self) -> usize {
        self.shape().iter().product()
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Same storage, another shape with the same number of elements.
    fn reshape(&self, shape: &[usize]) -> Self;
    /// The first `len` elements, as a tensor of their own on the same storage.
    fn prefix(&self, len: usize) -> Self;
    fn same_buffer(&self, other: &Self) -> bool;
}

/// A compute backend (see the module docs). `'static` so that backend-specific machinery (the
/// GPU's kernel variants and tuning) can be reached from generic code by downcasting where it
/// exists, without being part of this interface.
#[allow(clippy::too_many_arguments)]
pub trait Backend: Send + Sync + 'static {
    type Tensor: TensorOps;
    /// A host read in flight ([`Backend::read_async`]).
    type PendingRead;

    // ------------------------------------------------------------------ device

    /// One line naming the device (adapter, driver, threads), for logs and metrics.
    fn describe(&self) -> String;
    /// Bytes the largest single tensor may hold, where the device has such a limit.
    fn max_tensor_bytes(&self) -> Option<u64> {
        None
    }
    /// Bytes the largest single allocation may hold (a tensor bound through windows may exceed
    /// [`Backend::max_tensor_bytes`] but not this), where the device has such a limit.
    fn max_buffer_bytes(&self) -> Option<u64> {
        self.max_tensor_bytes()
    }
    /// Bytes of tensors alive now, and the peak since [`Backend::reset_peak_memory`].
    fn memory_bytes(&self) -> (u64, u64) {
        (0, 0)
    }
    fn reset_peak_memory(&self) {}
    /// Turns per-op timing on or off, where the backend has it.
    fn set_profiling(&self, _on: bool) {}

    // ----------------------------------------------------------------- buffers

    /// A zero-filled tensor.
    fn zeros(&self, shape: &[usize]) -> Self::Tensor;
    /// A tensor whose contents are unspecified (a reused buffer's).
    fn uninit(&self, shape: &[usize]) -> Self::Tensor;
    fn upload(&self, shape: &[usize], data: &[f32]) -> Self::Tensor;
    fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Self::Tensor;
    /// Gives a tensor's storage back for reuse (when nothing else shares it).
    fn recycle(&self, t: Self::Tensor);
    /// Overwrites the whole tensor (`data.len() == t.len()`), after all recorded work.
    fn write(&self, t: &Self::Tensor, data: &[f32]);
    /// Writes raw bytes at a byte offset (multiples of 4), after all recorded work.
    fn write_words(&self, t: &Self::Tensor, byte_offset: u64, bytes: &[u8]);
    fn read(&self, t: &Self::Tensor) -> Vec<f32>;
    fn read_u32(&self, t: &Self::Tensor) -> Vec<u32>;
    /// Starts reading `count` values at `elem`; the host may record more work before waiting.
    fn read_async(&self, t: &Self::Tensor, elem: usize, count: usize) -> Self::PendingRead;
    /// Waits for a read started by [`Backend::read_async`].
    fn wait_read(&self, p: Self::PendingRead) -> Vec<f32>;
    /// `dst[dst_elem..][..count] = src[src_elem..][..count]`.
    fn copy(
        &self,
        src: &Self::Tensor,
        src_elem: usize,
        dst: &Self::Tensor,
        dst_elem: usize,
        count: usize,
    );
    fn fill_zero(&self, t: &Self::Tensor);
    /// Runs everything recorded so far and waits for it.
    fn flush(&self);

    // ------------------------------------------------------------------ neuron

    /// The fused neuron update over `u.len()` neurons: charge, fire, reset by subtraction, leak,
    /// accumulate. `fb` is ignored when `step.has_feedback` is false.
    fn neuron_step(
        &self,
        u: &Self::Tensor,
        acc: &Self::Tensor,
        spikes: &Self::Tensor,
        x: &Self::Tensor,
        fb: &Self::Tensor,
        step: NeuronStep,
    );

    // ------------------------------------------------------------------- dense

    /// `C[m×n] = alpha · op(A) · op(B) + beta · C`, all row-major.
    fn gemm(
        &self,
        ta: Op,
        tb: Op,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Self::Tensor,
        b: &Self::Tensor,
        beta: f32,
        c: &Self::Tensor,
    );

    // -------------------------------------------------------------------- conv

    /// `y = conv(x, w) + beta · y` (no bias).
    fn conv2d(
        &self,
        s: &ConvShape,
        x: &Self::Tensor,
        w: &Self::Tensor,
        beta: f32,
        y: &Self::Tensor,
    );
    /// `dx = alpha · ∂conv/∂x (dy) + beta · dx`.
    fn conv2d_input_grad(
        &self,
        s: &ConvShape,
        dy: &Self::Tensor,
        w: &Self::Tensor,
        alpha: f32,
        beta: f32,
        dx: &Self::Tensor,
    );
    /// `dw = alpha · ∂conv/∂w (dy, x) + beta · dw`.
    fn conv2d_weight_grad(
        &self,
        s: &ConvShape,
        dy: &Self::Tensor,
        x: &Self::Tensor,
        alpha: f32,
        beta: f32,
        dw: &Self::Tensor,
    );
    /// `wf[ci, co, ky, kx] = w[co, ci, kh-1-ky, kw-1-kx]`.
    fn conv_weight_flip(
        &self,
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
        w: &Self::Tensor,
        wf: &Self::Tensor,
    );
    /// `y = convT(x, w) + beta · y` (weight `[cin, cout, k, k]`).
    fn conv_transpose2d(
        &self,
        s: &ConvTShape,
        x: &Self::Tensor,
        w: &Self::Tensor,
        beta: f32,
        y: &Self::Tensor,
    ) {
        self.conv2d_input_grad(&s.as_conv(), x, w, 1.0, beta, y);
    }
    /// Input gradient of the transposed convolution: a plain convolution of `dy`.
    fn conv_transpose2d_input_grad(
        &self,
        s: &ConvTShape,
        dy: &Self::Tensor,
        w: &Self::Tensor,
        beta: f32,
        dx: &Self::Tensor,
    ) {
        self.conv2d(&s.as_conv(), dy, w, beta, dx);
    }
    /// Weight gradient of the transposed convolution: the convolution weight gradient with the
    /// roles of input and output gradient swapped.
    fn conv_transpose2d_weight_grad(
        &self,
        s: &ConvTShape,
        dy: &Self::Tensor,
        x: &Self::Tensor,
        alpha: f32,
        beta: f32,
        dw: &Self::Tensor,
    ) {
        self.conv2d_weight_grad(&s.as_conv(), x, dy, alpha, beta, dw);
    }

    // -------------------------------------------------------------------- pool

    /// 2×2 average pooling, stride 2, over `planes` planes of h×w.
    fn avgpool2x2(&self, planes: usize, h: usize, w: usize, x: &Self::Tensor, y: &Self::Tensor);
    fn avgpool2x2_grad(
        &self,
        planes: usize,
        h: usize,
        w: usize,
        dy: &Self::Tensor,
        dx: &Self::Tensor,
    );

    // ---------------------------------------------------------------------- bn

    /// Batch mean and biased variance per channel; with `update = Some(momentum)` also the
    /// running-statistics update.
    fn bn_stats(
        &self,
        s: BnShape,
        x: &Self::Tensor,
        mean: &Self::Tensor,
        var: &Self::Tensor,
        running_mean: &Self::Tensor,
        running_var: &Self::Tensor,
        update: Option<f32>,
    );
    fn bn_forward(
        &self,
        s: BnShape,
        x: &Self::Tensor,
        mean: &Self::Tensor,
        var: &Self::Tensor,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        y: &Self::Tensor,
    );
    /// Writes `dgamma`, `dbeta` and (when given) `dx`; `batch_stats`: whether the forward used
    /// the batch's own statistics (then differentiated through).
    fn bn_backward(
        &self,
        s: BnShape,
        x: &Self::Tensor,
        dy: &Self::Tensor,
        mean: &Self::Tensor,
        var: &Self::Tensor,
        gamma: &Self::Tensor,
        batch_stats: bool,
        dgamma: &Self::Tensor,
        dbeta: &Self::Tensor,
        dx: Option<&Self::Tensor>,
    );
    /// `y[b, c, ·] += bias[c]` in place.
    fn bias_add(&self, s: BnShape, bias: &Self::Tensor, y: &Self::Tensor);
    /// `out[c] = alpha · Σ x[·, c, ·] + beta · out[c]`.
    fn channel_sum(&self, s: BnShape, x: &Self::Tensor, alpha: f32, beta: f32, out: &Self::Tensor);

    // ------------------------------------------------------------- elementwise

    /// `y = clamp(scale · z, 0, 1)` and `mask = 1[0 < scale · z < 1]`.
    fn clamp_mask(&self, z: &Self::Tensor, scale: f32, y: &Self::Tensor, mask: &Self::Tensor);
    /// `y[yo..yo+n] = alpha · x[xo..xo+n] + beta · y[yo..yo+n]` (x may be y, at the same offset).
    fn axpby_range(
        &self,
        n: usize,
        alpha: f32,
        x: &Self::Tensor,
        xo: usize,
        beta: f32,
        y: &Self::Tensor,
        yo: usize,
    );
    /// `y = alpha · x + beta · y` over whole tensors of one length.
    fn axpby(&self, alpha: f32, x: &Self::Tensor, beta: f32, y: &Self::Tensor) {
        assert_eq!(
            x.len(),
            y.len(),
            "axpby: {:?} vs {:?}",
            x.shape(),
            y.shape()
        );
        self.axpby_range(x.len(), alpha, x, 0, beta, y, 0);
    }
    /// `y = alpha · y` in place.
    fn scale(&self, alpha: f32, y: &Self::Tensor);
    /// `y = y ⊙ m` in place, `m` repeating every `m.len()` elements.
    fn mask_mul(&self, m: &Self::Tensor, y: &Self::Tensor);
    /// Fills `mask` with a dropout mask: 0 with probability `prob`, else 1/(1 − prob), from a
    /// counter-based hash of (`seed`, `stream`, index) (shaders/dropout_mask.wgsl), so every
    /// backend draws the same masks.
    fn dropout_mask(&self, mask: &Self::Tensor, prob: f32, seed: u32, stream: u32);
    /// `out[r] = alpha · x[r]·y[r] + beta · out[r]` for `rows` rows of `dim`.
    fn row_dot(
        &self,
        rows: usize,
        dim: usize,
        x: &Self::Tensor,
        y: &Self::Tensor,
        alpha: f32,
        beta: f32,
        out: &Self::Tensor,
    );
    /// Σ x (or Σ x² with `square`) into `out[0]`; `partials` holds
    /// [`Backend::sum_partials_len`]`(x.len())` elements of scratch.
    fn sum(&self, x: &Self::Tensor, square: bool, partials: &Self::Tensor, out: &Self::Tensor);
    /// Elements the `partials` scratch of [`Backend::sum`] needs for `n` inputs (default: the
    /// WGSL reduction's, one per 4096 inputs).
    fn sum_partials_len(n: usize) -> usize {
        n.div_ceil(4096).max(1)
    }
    /// Softmax cross-entropy of `logits [rows, classes]` against `labels` (u32): per-row `loss`,
    /// `dlogits = grad_scale · (softmax − onehot)` and `correct` (1 where the arg-max is the
    /// label).
    fn softmax_xent(
        &self,
        rows: usize,
        classes: usize,
        logits: &Self::Tensor,
        labels: &Self::Tensor,
        grad_scale: f32,
        loss: &Self::Tensor,
        dlogits: &Self::Tensor,
        correct: &Self::Tensor,
    );
    /// One SGD step in place, as `torch.optim.SGD` (dampening 0, no Nesterov):
    /// `d = g + wd·w; v = momentum·v + d; w = w − lr·v`.
    fn sgd(
        &self,
        w: &Self::Tensor,
        g: &Self::Tensor,
        v: &Self::Tensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    );

    // ---------------------------------------------------------- spectral norm

    /// One power-iteration step on `w [rows, cols]`, updating `u`, `v` and writing σ̂ to
    /// `sigma[0]`.
    fn power_iteration(
        &self,
        rows: usize,
        cols: usize,
        w: &Self::Tensor,
        u: &Self::Tensor,
        v: &Self::Tensor,
        sigma: &Self::Tensor,
    );
    /// `weff = clamp(g, −1, 1) · w / sigma[0]`.
    fn sn_weight(
        &self,
        w: &Self::Tensor,
        g: &Self::Tensor,
        sigma: &Self::Tensor,
        weff: &Self::Tensor,
    );
    /// Backward of [`Backend::sn_weight`]; `scalars = [σ̂, ⟨G, w⟩]`, w viewed as
    /// `[rows, cols]`.
    fn sn_weight_grad(
        &self,
        cols: usize,
        gw: &Self::Tensor,
        u: &Self::Tensor,
        v: &Self::Tensor,
        g: &Self::Tensor,
        scalars: &Self::Tensor,
        dw: &Self::Tensor,
        dg: &Self::Tensor,
    );

    // ------------------------------------------------------------------ solver

    /// Per-sample products of one iteration into `scal` (shaders/solver_dots.wgsl).
    fn solver_dots(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        hist: &Self::Tensor,
        v: &SolverVectors<Self::Tensor>,
        scal: &Self::Tensor,
    );
    /// The batch-global step of one iteration: residual norm, best iterate, stopping rule and
    /// Anderson's least squares (shaders/solver_track.wgsl).
    fn solver_track(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        threshold: usize,
        eps2: f32,
        reg: f32,
        scal: &Self::Tensor,
    );
    /// The per-element step of one iteration (shaders/solver_combine.wgsl).
    fn solver_combine(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        alpha: f32,
        hist: &Self::Tensor,
        v: &SolverVectors<Self::Tensor>,
        scal: &Self::Tensor,
    );

    // ------------------------------------------------------------------ events

    /// `dst[c, r] = src[r, c]` for a `rows × cols` matrix.
    fn transpose(&self, rows: usize, cols: usize, src: &Self::Tensor, dst: &Self::Tensor) {
        self.transpose_padded(rows, cols, rows, src, dst);
    }
    /// `dst[c·ld + r] = src[r, c]`: the transpose with its rows `ld ≥ rows` apart; the padding
    /// is not written.
    fn transpose_padded(
        &self,
        rows: usize,
        cols: usize,
        ld: usize,
        src: &Self::Tensor,
        dst: &Self::Tensor,
    );
    /// Words of the spike bit set of `n` neurons (one sample) of [`Backend::fc_event_sim`].
    fn spike_words(n: usize) -> usize {
        events::spike_words(n)
    }
    /// Most neurons per sample [`Backend::fc_event_sim`] handles.
    fn fc_event_max_neurons() -> usize {
        events::FC_EVENT_MAX_NEURONS
    }
    /// Row stride of [`Backend::fc_event_sim`]'s `W_effᵀ` (default: rows padded to whole vec4s).
    fn fc_event_ld(n: usize) -> usize {
        events::fc_event_ld(n)
    }
    /// Steps `t_begin..t_end` of a linear feedback layer's simulation, event-driven (see
    /// [`FcEventSim`]).
    fn fc_event_sim(
        &self,
        s: &FcEventSim,
        u: &Self::Tensor,
        acc: &Self::Tensor,
        bits: &Self::Tensor,
        wt: &Self::Tensor,
        x: &Self::Tensor,
        mask: Option<&Self::Tensor>,
    );
    /// Words of the spike bit sets of a conv layer's output (default: one set per sample,
    /// channel and row).
    fn conv_spike_words(batch: usize, channels: usize, h: usize, w: usize) -> usize {
        events::conv_spike_words(batch, channels, h, w)
    }
    /// Row stride of [`Backend::conv_event_sim`]'s transposed weight (default: output channels
    /// padded to whole vec4s).
    fn conv_event_ld(cout: usize) -> usize {
        events::conv_event_ld(cout)
    }
    /// Whether [`Backend::conv_event_sim`] handles a feedback convolution of this shape.
    fn conv_event_supported(s: &ConvShape) -> bool {
        events::conv_event_supported(s)
    }
    /// One step of a conv feedback layer's simulation, event-driven: the feedback current from
    /// `in_bits` (the previous step's spikes, when `step.has_feedback`) through `wt` (the weight
    /// as `[cin·kh·kw, cout]`, rows [`Backend::conv_event_ld`] apart, zero-padded), masked by
    /// `mask` when given, the neuron update of `u`/`acc` with input `x[x_offset..]`, and this
    /// step's spikes into `out_bits`.
    fn conv_event_sim(
        &self,
        s: &ConvShape,
        step: NeuronStep,
        u: &Self::Tensor,
        acc: &Self::Tensor,
        in_bits: &Self::Tensor,
        out_bits: &Self::Tensor,
        wt: &Self::Tensor,
        x: &Self::Tensor,
        mask: Option<&Self::Tensor>,
    );
}
