//! The GPU as a [`Backend`]: every op delegates to its launch code in [`crate::ops`], so the
//! generic model runs exactly the dispatches it ran before the seam. The GPU's own policy
//! (kernel variants, sharing, event forms) stays on [`Gpu`] and is applied inside `ops`.

use fsnn_core::backend::{Backend, TensorOps};
use fsnn_core::shapes::{
    BnShape, ConvShape, ConvTShape, FcEventSim, NeuronStep, Op, SolverIter, SolverLayout,
    SolverVectors,
};

use super::{Gpu, PendingRead, Tensor};
use crate::ops;

/// The GPU behind a generic backend, where it is one: the way generic code (the trainer) reaches
/// the GPU's own machinery (kernel choice measured per adapter, per-kernel profiles), which is
/// no part of the [`Backend`] interface.
pub fn as_gpu<B: Backend>(b: &B) -> Option<&Gpu> {
    (b as &dyn std::any::Any).downcast_ref::<Gpu>()
}

impl TensorOps for Tensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn len(&self) -> usize {
        Tensor::len(self)
    }
    fn reshape(&self, shape: &[usize]) -> Self {
        Tensor::reshape(self, shape)
    }
    fn prefix(&self, len: usize) -> Self {
        assert!(
            len <= Tensor::len(self),
            "prefix of {len} elements of {:?}",
            self.shape
        );
        Tensor {
            buf: self.buf.clone(),
            shape: vec![len],
        }
    }
    fn same_buffer(&self, other: &Self) -> bool {
        Tensor::same_buffer(self, other)
    }
}

impl Backend for Gpu {
    type Tensor = Tensor;
    type PendingRead = PendingRead;

    fn describe(&self) -> String {
        let i = &self.ctx.info;
        format!("{} ({}, {} {})", i.name, i.backend, i.driver, i.driver_info)
    }
    fn max_tensor_bytes(&self) -> Option<u64> {
        Some(self.ctx.max_binding_bytes())
    }
    fn max_buffer_bytes(&self) -> Option<u64> {
        Some(self.ctx.limits.max_buffer_size)
    }
    fn memory_bytes(&self) -> (u64, u64) {
        Gpu::memory_bytes(self)
    }
    fn reset_peak_memory(&self) {
        Gpu::reset_peak_memory(self)
    }
    fn set_profiling(&self, on: bool) {
        Gpu::set_profiling(self, on)
    }

    fn zeros(&self, shape: &[usize]) -> Tensor {
        Gpu::zeros(self, shape)
    }
    fn uninit(&self, shape: &[usize]) -> Tensor {
        Gpu::uninit(self, shape)
    }
    fn upload(&self, shape: &[usize], data: &[f32]) -> Tensor {
        Gpu::upload(self, shape, data)
    }
    fn upload_u32(&self, shape: &[usize], data: &[u32]) -> Tensor {
        Gpu::upload_u32(self, shape, data)
    }
    fn recycle(&self, t: Tensor) {
        Gpu::recycle(self, t)
    }
    fn write(&self, t: &Tensor, data: &[f32]) {
        Gpu::write(self, t, data)
    }
    fn write_words(&self, t: &Tensor, byte_offset: u64, bytes: &[u8]) {
        Gpu::write_words(self, t, byte_offset, bytes)
    }
    fn read(&self, t: &Tensor) -> Vec<f32> {
        Gpu::read(self, t)
    }
    fn read_u32(&self, t: &Tensor) -> Vec<u32> {
        Gpu::read_u32(self, t)
    }
    fn read_async(&self, t: &Tensor, elem: usize, count: usize) -> PendingRead {
        Gpu::read_async(self, t, elem, count)
    }
    fn wait_read(&self, p: PendingRead) -> Vec<f32> {
        p.wait(self)
    }
    fn copy(&self, src: &Tensor, src_elem: usize, dst: &Tensor, dst_elem: usize, count: usize) {
        Gpu::copy(self, src, src_elem, dst, dst_elem, count)
    }
    fn fill_zero(&self, t: &Tensor) {
        Gpu::fill_zero(self, t)
    }
    fn flush(&self) {
        Gpu::flush(self)
    }

    fn neuron_step(
        &self,
        u: &Tensor,
        acc: &Tensor,
        spikes: &Tensor,
        x: &Tensor,
        fb: &Tensor,
        step: NeuronStep,
    ) {
        ops::neuron_step(self, u, acc, spikes, x, fb, step)
    }
    fn gemm(
        &self,
        ta: Op,
        tb: Op,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Tensor,
        b: &Tensor,
        beta: f32,
        c: &Tensor,
    ) {
        ops::gemm(self, ta, tb, m, n, k, alpha, a, b, beta, c)
    }
    fn conv2d(&self, s: &ConvShape, x: &Tensor, w: &Tensor, beta: f32, y: &Tensor) {
        ops::conv2d(self, s, x, w, beta, y)
    }
    fn conv2d_input_grad(
        &self,
        s: &ConvShape,
        dy: &Tensor,
        w: &Tensor,
        alpha: f32,
        beta: f32,
        dx: &Tensor,
    ) {
        ops::conv2d_input_grad(self, s, dy, w, alpha, beta, dx)
    }
    fn conv2d_weight_grad(
        &self,
        s: &ConvShape,
        dy: &Tensor,
        x: &Tensor,
        alpha: f32,
        beta: f32,
        dw: &Tensor,
    ) {
        ops::conv2d_weight_grad(self, s, dy, x, alpha, beta, dw)
    }
    fn conv_weight_flip(
        &self,
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
        w: &Tensor,
        wf: &Tensor,
    ) {
        ops::conv_weight_flip(self, cout, cin, kh, kw, w, wf)
    }
    fn conv_transpose2d(&self, s: &ConvTShape, x: &Tensor, w: &Tensor, beta: f32, y: &Tensor) {
        ops::conv_transpose2d(self, s, x, w, beta, y)
    }
    fn conv_transpose2d_input_grad(
        &self,
        s: &ConvTShape,
        dy: &Tensor,
        w: &Tensor,
        beta: f32,
        dx: &Tensor,
    ) {
        ops::conv_transpose2d_input_grad(self, s, dy, w, beta, dx)
    }
    fn conv_transpose2d_weight_grad(
        &self,
        s: &ConvTShape,
        dy: &Tensor,
        x: &Tensor,
        alpha: f32,
        beta: f32,
        dw: &Tensor,
    ) {
        ops::conv_transpose2d_weight_grad(self, s, dy, x, alpha, beta, dw)
    }
    fn avgpool2x2(&self, planes: usize, h: usize, w: usize, x: &Tensor, y: &Tensor) {
        ops::avgpool2x2(self, planes, h, w, x, y)
    }
    fn avgpool2x2_grad(&self, planes: usize, h: usize, w: usize, dy: &Tensor, dx: &Tensor) {
        ops::avgpool2x2_grad(self, planes, h, w, dy, dx)
    }
    fn bn_stats(
        &self,
        s: BnShape,
        x: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        update: Option<f32>,
    ) {
        ops::bn_stats(self, s, x, mean, var, running_mean, running_var, update)
    }
    fn bn_forward(
        &self,
        s: BnShape,
        x: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
    ) {
        ops::bn_forward(self, s, x, mean, var, gamma, beta, y)
    }
    fn bn_backward(
        &self,
        s: BnShape,
        x: &Tensor,
        dy: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        gamma: &Tensor,
        batch_stats: bool,
        dgamma: &Tensor,
        dbeta: &Tensor,
        dx: Option<&Tensor>,
    ) {
        ops::bn_backward(
            self,
            s,
            x,
            dy,
            mean,
            var,
            gamma,
            batch_stats,
            dgamma,
            dbeta,
            dx,
        )
    }
    fn bias_add(&self, s: BnShape, bias: &Tensor, y: &Tensor) {
        ops::bias_add(self, s, bias, y)
    }
    fn channel_sum(&self, s: BnShape, x: &Tensor, alpha: f32, beta: f32, out: &Tensor) {
        ops::channel_sum(self, s, x, alpha, beta, out)
    }
    fn clamp_mask(&self, z: &Tensor, scale: f32, y: &Tensor, mask: &Tensor) {
        ops::clamp_mask(self, z, scale, y, mask)
    }
    fn axpby_range(
        &self,
        n: usize,
        alpha: f32,
        x: &Tensor,
        xo: usize,
        beta: f32,
        y: &Tensor,
        yo: usize,
    ) {
        ops::axpby_range(self, n, alpha, x, xo, beta, y, yo)
    }
    fn axpby(&self, alpha: f32, x: &Tensor, beta: f32, y: &Tensor) {
        ops::axpby(self, alpha, x, beta, y)
    }
    fn scale(&self, alpha: f32, y: &Tensor) {
        ops::scale(self, alpha, y)
    }
    fn mask_mul(&self, m: &Tensor, y: &Tensor) {
        ops::mask_mul(self, m, y)
    }
    fn dropout_mask(&self, mask: &Tensor, prob: f32, seed: u32, stream: u32) {
        ops::dropout_mask(self, mask, prob, seed, stream)
    }
    fn row_dot(
        &self,
        rows: usize,
        dim: usize,
        x: &Tensor,
        y: &Tensor,
        alpha: f32,
        beta: f32,
        out: &Tensor,
    ) {
        ops::row_dot(self, rows, dim, x, y, alpha, beta, out)
    }
    fn sum(&self, x: &Tensor, square: bool, partials: &Tensor, out: &Tensor) {
        ops::sum(self, x, square, partials, out)
    }
    fn sum_partials_len(n: usize) -> usize {
        ops::sum_partials_len(n)
    }
    fn softmax_xent(
        &self,
        rows: usize,
        classes: usize,
        logits: &Tensor,
        labels: &Tensor,
        grad_scale: f32,
        loss: &Tensor,
        dlogits: &Tensor,
        correct: &Tensor,
    ) {
        ops::softmax_xent(
            self, rows, classes, logits, labels, grad_scale, loss, dlogits, correct,
        )
    }
    fn sgd(&self, w: &Tensor, g: &Tensor, v: &Tensor, lr: f32, momentum: f32, weight_decay: f32) {
        ops::sgd(self, w, g, v, lr, momentum, weight_decay)
    }
    fn power_iteration(
        &self,
        rows: usize,
        cols: usize,
        w: &Tensor,
        u: &Tensor,
        v: &Tensor,
        sigma: &Tensor,
    ) {
        ops::power_iteration(self, rows, cols, w, u, v, sigma)
    }
    fn sn_weight(&self, w: &Tensor, g: &Tensor, sigma: &Tensor, weff: &Tensor) {
        ops::sn_weight(self, w, g, sigma, weff)
    }
    fn sn_weight_grad(
        &self,
        cols: usize,
        gw: &Tensor,
        u: &Tensor,
        v: &Tensor,
        g: &Tensor,
        scalars: &Tensor,
        dw: &Tensor,
        dg: &Tensor,
    ) {
        ops::sn_weight_grad(self, cols, gw, u, v, g, scalars, dw, dg)
    }
    fn solver_dots(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        hist: &Tensor,
        v: &SolverVectors<Tensor>,
        scal: &Tensor,
    ) {
        ops::solver_dots(self, l, i, hist, v, scal)
    }
    fn solver_track(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        threshold: usize,
        eps2: f32,
        reg: f32,
        scal: &Tensor,
    ) {
        ops::solver_track(self, l, i, threshold, eps2, reg, scal)
    }
    fn solver_combine(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        alpha: f32,
        hist: &Tensor,
        v: &SolverVectors<Tensor>,
        scal: &Tensor,
    ) {
        ops::solver_combine(self, l, i, alpha, hist, v, scal)
    }
    fn transpose(&self, rows: usize, cols: usize, src: &Tensor, dst: &Tensor) {
        ops::transpose(self, rows, cols, src, dst)
    }
    fn transpose_padded(&self, rows: usize, cols: usize, ld: usize, src: &Tensor, dst: &Tensor) {
        ops::transpose_padded(self, rows, cols, ld, src, dst)
    }
    fn spike_words(n: usize) -> usize {
        ops::spike_words(n)
    }
    fn fc_event_max_neurons() -> usize {
        ops::FC_EVENT_MAX_NEURONS
    }
    fn fc_event_ld(n: usize) -> usize {
        ops::fc_event_ld(n)
    }
    fn fc_event_sim(
        &self,
        s: &FcEventSim,
        u: &Tensor,
        acc: &Tensor,
        bits: &Tensor,
        wt: &Tensor,
        x: &Tensor,
        mask: Option<&Tensor>,
    ) {
        ops::fc_event_sim(self, s, u, acc, bits, wt, x, mask)
    }
    fn conv_spike_words(batch: usize, channels: usize, h: usize, w: usize) -> usize {
        ops::conv_spike_words(batch, channels, h, w)
    }
    fn conv_event_ld(cout: usize) -> usize {
        ops::conv_event_ld(cout)
    }
    fn conv_event_supported(s: &ConvShape) -> bool {
        ops::conv_event_supported(s)
    }
    fn conv_event_sim(
        &self,
        s: &ConvShape,
        step: NeuronStep,
        u: &Tensor,
        acc: &Tensor,
        in_bits: &Tensor,
        out_bits: &Tensor,
        wt: &Tensor,
        x: &Tensor,
        mask: Option<&Tensor>,
    ) {
        ops::conv_event_sim(self, s, step, u, acc, in_bits, out_bits, wt, x, mask)
    }
}
