//! `impl Backend for Cpu`: each op checks its operands, copies any input that shares a buffer
//! with an output, and runs the fast kernel ([`crate::conv`], [`crate::events`]) or the twin.

use std::borrow::Cow;

use fsnn_core::backend::Backend;
use fsnn_core::shapes::{
    BnShape, ConvShape, FcEventSim, NeuronStep, Op, SolverIter, SolverLayout, SolverVectors,
};
use fsnn_core::twins;
use fsnn_core::TensorOps;

use crate::{conv, cpu_model, events, Cpu, CpuTensor};

/// `x`'s elements, copied when `x` shares its buffer with one of `outs` (so that no op ever
/// holds a shared and a mutable view of the same words).
fn inp<'a>(x: &'a CpuTensor, outs: &[&CpuTensor]) -> Cow<'a, [f32]> {
    if outs.iter().any(|o| o.same_buffer(x)) {
        Cow::Owned(x.r().to_vec())
    } else {
        Cow::Borrowed(x.r())
    }
}

fn check(t: &CpuTensor, at_least: usize, what: &str) {
    assert!(
        t.len() >= at_least,
        "{what}: tensor of {:?} has {} elements, needs {at_least}",
        t.shape,
        t.len()
    );
}

impl Backend for Cpu {
    type Tensor = CpuTensor;
    type PendingRead = Vec<f32>;

    fn describe(&self) -> String {
        format!("CPU: {} ({} threads)", cpu_model(), self.threads)
    }
    fn memory_bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.memory.now.load(Relaxed),
            self.memory.peak.load(Relaxed),
        )
    }
    fn reset_peak_memory(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.memory
            .peak
            .store(self.memory.now.load(Relaxed), Relaxed);
    }

    fn zeros(&self, shape: &[usize]) -> CpuTensor {
        self.alloc(shape)
    }
    fn uninit(&self, shape: &[usize]) -> CpuTensor {
        self.alloc(shape)
    }
    fn upload(&self, shape: &[usize], data: &[f32]) -> CpuTensor {
        let t = self.alloc(shape);
        self.write(&t, data);
        t
    }
    fn upload_u32(&self, shape: &[usize], data: &[u32]) -> CpuTensor {
        let t = self.alloc(shape);
        t.w_u32().copy_from_slice(data);
        t
    }
    fn recycle(&self, _t: CpuTensor) {}
    fn write(&self, t: &CpuTensor, data: &[f32]) {
        assert_eq!(
            data.len(),
            t.len(),
            "upload size mismatch for shape {:?}",
            t.shape
        );
        t.w().copy_from_slice(data);
    }
    fn write_words(&self, t: &CpuTensor, byte_offset: u64, bytes: &[u8]) {
        assert!(
            byte_offset.is_multiple_of(4) && bytes.len().is_multiple_of(4),
            "write_words: unaligned"
        );
        let at = byte_offset as usize / 4;
        let words: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        t.all_mut()[at..at + words.len()].copy_from_slice(&words);
    }
    fn read(&self, t: &CpuTensor) -> Vec<f32> {
        t.r().to_vec()
    }
    fn read_u32(&self, t: &CpuTensor) -> Vec<u32> {
        t.r_u32().to_vec()
    }
    fn read_async(&self, t: &CpuTensor, elem: usize, count: usize) -> Vec<f32> {
        t.all()[elem..elem + count].to_vec()
    }
    fn wait_read(&self, p: Vec<f32>) -> Vec<f32> {
        p
    }
    fn copy(
        &self,
        src: &CpuTensor,
        src_elem: usize,
        dst: &CpuTensor,
        dst_elem: usize,
        count: usize,
    ) {
        if src.same_buffer(dst) {
            t_copy_within(dst, src_elem, dst_elem, count);
        } else {
            dst.all_mut()[dst_elem..dst_elem + count]
                .copy_from_slice(&src.all()[src_elem..src_elem + count]);
        }
    }
    fn fill_zero(&self, t: &CpuTensor) {
        t.w().fill(0.0);
    }
    fn flush(&self) {}

    fn neuron_step(
        &self,
        u: &CpuTensor,
        acc: &CpuTensor,
        spikes: &CpuTensor,
        x: &CpuTensor,
        fb: &CpuTensor,
        step: NeuronStep,
    ) {
        let outs = [u, acc, spikes];
        let (x, fb) = (inp(x, &outs), inp(fb, &outs));
        twins::neuron_step(u.w(), acc.w(), spikes.w(), &x, &fb, step);
    }

    fn gemm(
        &self,
        ta: Op,
        tb: Op,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &CpuTensor,
        b: &CpuTensor,
        beta: f32,
        c: &CpuTensor,
    ) {
        check(a, m * k, "gemm a");
        check(b, k * n, "gemm b");
        check(c, m * n, "gemm c");
        let (a, b) = (inp(a, &[c]), inp(b, &[c]));
        conv::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, c.w());
    }

    fn conv2d(&self, s: &ConvShape, x: &CpuTensor, w: &CpuTensor, beta: f32, y: &CpuTensor) {
        check(x, s.input_len(), "conv2d x");
        check(w, s.weight_len(), "conv2d w");
        check(y, s.output_len(), "conv2d y");
        let (x, w) = (inp(x, &[y]), inp(w, &[y]));
        conv::conv2d(&mut self.conv.lock().unwrap(), s, &x, &w, beta, y.w());
    }
    fn conv2d_input_grad(
        &self,
        s: &ConvShape,
        dy: &CpuTensor,
        w: &CpuTensor,
        alpha: f32,
        beta: f32,
        dx: &CpuTensor,
    ) {
        check(dy, s.output_len(), "conv2d_input_grad dy");
        check(w, s.weight_len(), "conv2d_input_grad w");
        check(dx, s.input_len(), "conv2d_input_grad dx");
        let (dy, w) = (inp(dy, &[dx]), inp(w, &[dx]));
        let mut sc = self.conv.lock().unwrap();
        conv::conv2d_input_grad(&mut sc, s, &dy, &w, alpha, beta, dx.w());
    }
    fn conv2d_weight_grad(
        &self,
        s: &ConvShape,
        dy: &CpuTensor,
        x: &CpuTensor,
        alpha: f32,
        beta: f32,
        dw: &CpuTensor,
    ) {
        check(dy, s.output_len(), "conv2d_weight_grad dy");
        check(x, s.input_len(), "conv2d_weight_grad x");
        check(dw, s.weight_len(), "conv2d_weight_grad dw");
        let (dy, x) = (inp(dy, &[dw]), inp(x, &[dw]));
        let mut sc = self.conv.lock().unwrap();
        conv::conv2d_weight_grad(&mut sc, s, &dy, &x, alpha, beta, dw.w());
    }
    fn conv_weight_flip(
        &self,
        cout: usize,
        cin: usize,
        kh: usize,
        kw: usize,
        w: &CpuTensor,
        wf: &CpuTensor,
    ) {
        let f = twins::conv_weight_flip(cout, cin, kh, kw, &inp(w, &[wf]));
        wf.w()[..f.len()].copy_from_slice(&f);
    }

    fn avgpool2x2(&self, planes: usize, h: usize, w: usize, x: &CpuTensor, y: &CpuTensor) {
        twins::avgpool2x2(planes, h, w, &inp(x, &[y]), y.w());
    }
    fn avgpool2x2_grad(&self, planes: usize, h: usize, w: usize, dy: &CpuTensor, dx: &CpuTensor) {
        twins::avgpool2x2_grad(planes, h, w, &inp(dy, &[dx]), dx.w());
    }

    fn bn_stats(
        &self,
        s: BnShape,
        x: &CpuTensor,
        mean: &CpuTensor,
        var: &CpuTensor,
        running_mean: &CpuTensor,
        running_var: &CpuTensor,
        update: Option<f32>,
    ) {
        let outs = [mean, var, running_mean, running_var];
        let x = inp(x, &outs);
        let (m, v) = twins::bn_stats(s, &x, running_mean.w(), running_var.w(), update);
        mean.w()[..m.len()].copy_from_slice(&m);
        var.w()[..v.len()].copy_from_slice(&v);
    }
    fn bn_forward(
        &self,
        s: BnShape,
        x: &CpuTensor,
        mean: &CpuTensor,
        var: &CpuTensor,
        gamma: &CpuTensor,
        beta: &CpuTensor,
        y: &CpuTensor,
    ) {
        let o = [y];
        let (x, m, v) = (inp(x, &o), inp(mean, &o), inp(var, &o));
        let (g, b) = (inp(gamma, &o), inp(beta, &o));
        twins::bn_forward(s, &x, &m, &v, &g, &b, y.w());
    }
    fn bn_backward(
        &self,
        s: BnShape,
        x: &CpuTensor,
        dy: &CpuTensor,
        mean: &CpuTensor,
        var: &CpuTensor,
        gamma: &CpuTensor,
        batch_stats: bool,
        dgamma: &CpuTensor,
        dbeta: &CpuTensor,
        dx: Option<&CpuTensor>,
    ) {
        let (dg, db, d) =
            twins::bn_backward(s, x.r(), dy.r(), mean.r(), var.r(), gamma.r(), batch_stats);
        dgamma.w()[..dg.len()].copy_from_slice(&dg);
        dbeta.w()[..db.len()].copy_from_slice(&db);
        if let Some(dx) = dx {
            dx.w()[..d.len()].copy_from_slice(&d);
        }
    }
    fn bias_add(&self, s: BnShape, bias: &CpuTensor, y: &CpuTensor) {
        twins::bias_add(s, &inp(bias, &[y]), y.w());
    }
    fn channel_sum(&self, s: BnShape, x: &CpuTensor, alpha: f32, beta: f32, out: &CpuTensor) {
        twins::channel_sum(s, &inp(x, &[out]), alpha, beta, out.w());
    }

    fn clamp_mask(&self, z: &CpuTensor, scale: f32, y: &CpuTensor, mask: &CpuTensor) {
        let z = inp(z, &[y, mask]);
        twins::clamp_mask(&z, scale, y.w(), mask.w());
    }
    fn axpby_range(
        &self,
        n: usize,
        alpha: f32,
        x: &CpuTensor,
        xo: usize,
        beta: f32,
        y: &CpuTensor,
        yo: usize,
    ) {
        let x = inp(x, &[y]);
        let y = &mut y.all_mut()[yo..yo + n];
        for (yv, &xv) in y.iter_mut().zip(&x[xo..xo + n]) {
            // The twin's (and kernel's) form: beta = 0 ignores y.
            *yv = alpha * xv + if beta != 0.0 { beta * *yv } else { 0.0 };
        }
    }
    fn scale(&self, alpha: f32, y: &CpuTensor) {
        twins::scale(alpha, y.w());
    }
    fn mask_mul(&self, m: &CpuTensor, y: &CpuTensor) {
        twins::mask_mul(&inp(m, &[y]), y.w());
    }
    fn dropout_mask(&self, mask: &CpuTensor, prob: f32, seed: u32, stream: u32) {
        twins::dropout_mask(mask.w(), prob, seed, stream);
    }
    fn row_dot(
        &self,
        rows: usize,
        dim: usize,
        x: &CpuTensor,
        y: &CpuTensor,
        alpha: f32,
        beta: f32,
        out: &CpuTensor,
    ) {
        let (x, y) = (inp(x, &[out]), inp(y, &[out]));
        twins::row_dot(rows, dim, &x, &y, alpha, beta, out.w());
    }
    fn sum(&self, x: &CpuTensor, square: bool, _partials: &CpuTensor, out: &CpuTensor) {
        let s = twins::sum(&inp(x, &[out]), square);
        out.w()[0] = s;
    }
    fn sum_partials_len(_n: usize) -> usize {
        1
    }
    fn softmax_xent(
        &self,
        rows: usize,
        classes: usize,
        logits: &CpuTensor,
        labels: &CpuTensor,
        grad_scale: f32,
        loss: &CpuTensor,
        dlogits: &CpuTensor,
        correct: &CpuTensor,
    ) {
        let (l, d, c) = twins::softmax_xent(
            rows,
            classes,
            &logits.r()[..rows * classes],
            &labels.r_u32()[..rows],
            grad_scale,
        );
        loss.w()[..l.len()].copy_from_slice(&l);
        dlogits.w()[..d.len()].copy_from_slice(&d);
        correct.w()[..c.len()].copy_from_slice(&c);
    }
    fn sgd(&self, w: &CpuTensor, g: &CpuTensor, v: &CpuTensor, lr: f32, momentum: f32, wd: f32) {
        let g = inp(g, &[w, v]);
        twins::sgd(w.w(), &g, v.w(), lr, momentum, wd);
    }

    fn power_iteration(
        &self,
        rows: usize,
        cols: usize,
        w: &CpuTensor,
        u: &CpuTensor,
        v: &CpuTensor,
        sigma: &CpuTensor,
    ) {
        let w = inp(w, &[u, v, sigma]);
        let s = fsnn_core::host::power_iteration(rows, cols, &w, u.w(), v.w());
        sigma.w()[0] = s;
    }
    fn sn_weight(&self, w: &CpuTensor, g: &CpuTensor, sigma: &CpuTensor, weff: &CpuTensor) {
        let (g, sigma) = (g.r()[0], sigma.r()[0]);
        twins::sn_weight(&inp(w, &[weff]), g, sigma, weff.w());
    }
    fn sn_weight_grad(
        &self,
        cols: usize,
        gw: &CpuTensor,
        u: &CpuTensor,
        v: &CpuTensor,
        g: &CpuTensor,
        scalars: &CpuTensor,
        dw: &CpuTensor,
        dg: &CpuTensor,
    ) {
        let sc = scalars.r();
        let (d, dgv) = twins::sn_weight_grad(cols, gw.r(), u.r(), v.r(), g.r()[0], sc[0], sc[1]);
        dw.w()[..d.len()].copy_from_slice(&d);
        dg.w()[0] = dgv;
    }

    fn solver_dots(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        hist: &CpuTensor,
        v: &SolverVectors<CpuTensor>,
        scal: &CpuTensor,
    ) {
        let o = [scal];
        crate::solver::solver_dots(
            self.threads,
            l,
            i,
            &inp(hist, &o),
            &inp(v.jx, &o),
            &inp(v.x, &o),
            &inp(v.gl, &o),
            &inp(v.g, &o),
            &inp(v.step, &o),
            scal.w(),
        );
    }
    fn solver_track(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        threshold: usize,
        eps2: f32,
        reg: f32,
        scal: &CpuTensor,
    ) {
        twins::solver_track(l, i, threshold, eps2, reg, scal.w());
    }
    fn solver_combine(
        &self,
        l: &SolverLayout,
        i: SolverIter,
        alpha: f32,
        hist: &CpuTensor,
        v: &SolverVectors<CpuTensor>,
        scal: &CpuTensor,
    ) {
        let o = [hist, v.x, v.g, v.step, v.best];
        let (jx, gl, sc) = (inp(v.jx, &o), inp(v.gl, &o), inp(scal, &o));
        crate::solver::solver_combine(
            self.threads,
            l,
            i,
            alpha,
            hist.w(),
            &jx,
            v.x.w(),
            &gl,
            v.g.w(),
            v.step.w(),
            v.best.w(),
            &sc,
        );
    }

    fn transpose_padded(
        &self,
        rows: usize,
        cols: usize,
        ld: usize,
        src: &CpuTensor,
        dst: &CpuTensor,
    ) {
        twins::transpose_padded(rows, cols, ld, &inp(src, &[dst]), dst.w());
    }
    fn fc_event_sim(
        &self,
        s: &FcEventSim,
        u: &CpuTensor,
        acc: &CpuTensor,
        bits: &CpuTensor,
        wt: &CpuTensor,
        x: &CpuTensor,
        mask: Option<&CpuTensor>,
    ) {
        let o = [u, acc, bits];
        let (wt, x) = (inp(wt, &o), inp(x, &o));
        let mask = mask.map(|m| inp(m, &o));
        let mut fb = self.fb.lock().unwrap();
        events::fc_event_sim(
            s,
            u.w(),
            acc.w(),
            bits.w_u32(),
            &wt,
            &x,
            mask.as_deref(),
            &mut fb,
        );
    }
    fn conv_event_sim(
        &self,
        s: &ConvShape,
        step: NeuronStep,
        u: &CpuTensor,
        acc: &CpuTensor,
        in_bits: &CpuTensor,
        out_bits: &CpuTensor,
        wt: &CpuTensor,
        x: &CpuTensor,
        mask: Option<&CpuTensor>,
    ) {
        let o = [u, acc, out_bits];
        let (inb, wt, x) = (inp(in_bits, &o), inp(wt, &o), inp(x, &o));
        let mask = mask.map(|m| inp(m, &o));
        crate::events::conv_event_sim(
            self.threads,
            s,
            step,
            u.w(),
            acc.w(),
            bytemuck::cast_slice(&inb),
            out_bits.w_u32(),
            &wt,
            &x,
            mask.as_deref(),
        );
    }
}

fn t_copy_within(t: &CpuTensor, from: usize, to: usize, count: usize) {
    t.all_mut().copy_within(from..from + count, to);
}
