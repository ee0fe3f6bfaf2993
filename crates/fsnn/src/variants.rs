//! Kernel variants: for each hot kernel family, the WGSL kernels that compute the same result
//! (the same CPU twin), and which of them a [`Gpu`] dispatches.
//!
//! The defaults are the register-blocked kernels written for the software driver (`blocked`). The
//! `tiled` variants stage 64×64 tiles through workgroup memory, which is what real GPUs are fast
//! at. Which is faster is measured (median of a few timed dispatches at the presets' shapes, see
//! [`measure`]) once per adapter and driver, by `fsnn tune`, and cached in [`cache_path`] next to
//! the simulation-kernel cache; every [`Gpu`] starts from the cached choice for its adapter, else
//! the defaults. The choice is made per shape: each measured shape keeps the variant that was
//! fastest there, and a dispatch runs the variant of the measured shape nearest to its own (same
//! transposes or stride, closest in FLOPs; see [`Chosen::get_at`]), the family's overall winner
//! where nothing was measured. `FSNN_VARIANT_<FAMILY>=<name>` (e.g. `FSNN_VARIANT_GEMM=tiled`)
//! forces one variant over both; [`Gpu::set_variant`] forces one on one recorder (the tests do).
//!
//! The event-driven feedback of the forward simulation has its own choice (dense or event path),
//! measured per model shape: see [`crate::kernels`].
//!
//! The `subgroup` (GEMM only) and `coop` (GEMM and convolutions) variants are candidates where
//! the adapter has `Features::SUBGROUP` (lavapipe has), which the device then enables. The input
//! gradient has one more, `flipped`: at stride 1 it runs the forward family's kernel on a flipped
//! copy of the weights (see [`Variant::Flipped`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::gpu::{AdapterSummary, Gpu, Tensor};
use crate::ops::{self, ConvShape, Op};

/// A family of kernels that compute the same thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// `ops::gemm`.
    Gemm,
    /// `ops::conv2d` (and the input gradient of a transposed convolution).
    Conv2d,
    /// `ops::conv2d_input_grad` (and the forward pass of a transposed convolution).
    Conv2dInputGrad,
    /// `ops::conv2d_weight_grad` (and the weight gradient of a transposed convolution).
    Conv2dWeightGrad,
}

impl Family {
    pub const ALL: [Family; 4] = [
        Family::Gemm,
        Family::Conv2d,
        Family::Conv2dInputGrad,
        Family::Conv2dWeightGrad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Gemm => "gemm",
            Family::Conv2d => "conv2d",
            Family::Conv2dInputGrad => "conv2d_input_grad",
            Family::Conv2dWeightGrad => "conv2d_weight_grad",
        }
    }

    /// The environment variable that forces this family's variant.
    pub fn env_var(self) -> String {
        format!("FSNN_VARIANT_{}", self.name().to_uppercase())
    }

    /// Every candidate, the default first (see [`Family::available`] for one adapter's).
    pub fn candidates(self) -> &'static [Variant] {
        match self {
            Family::Gemm => &[
                Variant::Blocked,
                Variant::Tiled,
                Variant::Subgroup,
                Variant::Coop,
            ],
            Family::Conv2d | Family::Conv2dWeightGrad => {
                &[Variant::Blocked, Variant::Tiled, Variant::Coop]
            }
            Family::Conv2dInputGrad => &[
                Variant::Blocked,
                Variant::Tiled,
                Variant::Coop,
                Variant::Flipped,
            ],
        }
    }

    /// The candidates this device can run (subgroup variants need `Features::SUBGROUP`).
    pub fn available(self, gpu: &Gpu) -> Vec<Variant> {
        self.candidates()
            .iter()
            .copied()
            .filter(|v| v.supported(&gpu.ctx.features))
            .collect()
    }

    /// The WGSL kernel (file under `shaders/`) of one variant; for `flipped`, the weight copy it
    /// runs before the forward family's kernel.
    pub fn kernel(self, v: Variant) -> &'static str {
        match (self, v) {
            (Family::Gemm, Variant::Blocked) => "gemm",
            (Family::Gemm, Variant::Tiled) => "gemm_tiled",
            (Family::Gemm, Variant::Subgroup) => "gemm_subgroup",
            (Family::Gemm, Variant::Coop) => "gemm_coop",
            (Family::Conv2d, Variant::Blocked) => "conv2d_forward",
            (Family::Conv2d, Variant::Tiled) => "conv2d_forward_tiled",
            (Family::Conv2d, Variant::Coop) => "conv2d_forward_coop",
            (Family::Conv2dInputGrad, Variant::Blocked) => "conv2d_input_grad",
            (Family::Conv2dInputGrad, Variant::Tiled) => "conv2d_input_grad_tiled",
            (Family::Conv2dInputGrad, Variant::Coop) => "conv2d_input_grad_coop",
            (Family::Conv2dInputGrad, Variant::Flipped) => "conv_weight_flip",
            (Family::Conv2dWeightGrad, Variant::Blocked) => "conv2d_weight_grad",
            (Family::Conv2dWeightGrad, Variant::Tiled) => "conv2d_weight_grad_tiled",
            (Family::Conv2dWeightGrad, Variant::Coop) => "conv2d_weight_grad_coop",
            (f, v) => panic!("{f} has no {v} variant"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One way of computing a family's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// An 8×8 block of the result per invocation in registers, operands straight from storage
    /// (written for lavapipe, where workgroup memory is slow). The default.
    Blocked,
    /// 64×64 tiles per workgroup of 16×16 invocations (4×4 each), operands staged through
    /// workgroup memory as vec4 in steps of 16 along the reduction.
    Tiled,
    /// The register-blocked kernel with operand loads shared across a subgroup by shuffles
    /// (needs `Features::SUBGROUP`).
    Subgroup,
    /// Written for CPU drivers, whose kernels are bound by per-lane loads: 8 invocations load
    /// 8 consecutive k of each row of A once between them and share them by constant-lane
    /// shuffles, 16 rows × 4 columns per invocation (needs `Features::SUBGROUP`). The
    /// convolutions share their channel rows the same way (weights, or dy for the weight
    /// gradient), 32 rows × 8 (4 for the input gradient) columns per invocation.
    Coop,
    /// Input gradient only: where the convolution has stride 1 and a square kernel, a forward
    /// convolution of dy (the forward family's variant at that shape) with the weights flipped
    /// and transposed into a scratch copy (`conv_weight_flip.wgsl`), since forward kernels read
    /// each weight row contiguously where the input-gradient kernels stride over output channels
    /// (on lavapipe 11–15 % faster than `coop` at every stride-1 shape `fsnn tune` measures).
    /// Other shapes run [`Variant::fallback`].
    Flipped,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Blocked => "blocked",
            Variant::Tiled => "tiled",
            Variant::Subgroup => "subgroup",
            Variant::Coop => "coop",
            Variant::Flipped => "flipped",
        }
    }

    /// Whether this variant computes `p` its own way: `flipped` only where the input gradient is
    /// a forward convolution (`ConvShape::input_grad_as_forward`); elsewhere it runs
    /// [`Variant::fallback`], so a measurement there says nothing about it.
    pub fn applies(self, p: &Problem) -> bool {
        match (self, p) {
            (Variant::Flipped, Problem::Conv(s)) => s.input_grad_as_forward().is_some(),
            _ => true,
        }
    }

    /// The variant that runs where this one does not apply (see [`Variant::applies`]): for
    /// `flipped` the cooperative input-gradient kernel where the device can run it, else the
    /// blocked one; every other variant is its own.
    pub fn fallback(self, features: &wgpu::Features) -> Variant {
        match self {
            Variant::Flipped if Variant::Coop.supported(features) => Variant::Coop,
            Variant::Flipped => Variant::Blocked,
            v => v,
        }
    }

    /// Whether a device with these features can run this variant.
    pub fn supported(self, features: &wgpu::Features) -> bool {
        !matches!(self, Variant::Subgroup | Variant::Coop)
            || features.contains(wgpu::Features::SUBGROUP)
    }
}

impl FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "blocked" => Ok(Variant::Blocked),
            "tiled" => Ok(Variant::Tiled),
            "subgroup" => Ok(Variant::Subgroup),
            "coop" => Ok(Variant::Coop),
            "flipped" => Ok(Variant::Flipped),
            _ => Err(format!(
                "unknown kernel variant {s:?} (blocked | tiled | subgroup | coop | flipped)"
            )),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The variant of every family, and where `fsnn tune` measured them, of every measured shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    family: [Variant; 4],
    shapes: [Vec<ShapeChoice>; 4],
}

impl Default for Chosen {
    fn default() -> Self {
        Chosen {
            family: Family::ALL.map(|f| f.candidates()[0]),
            shapes: Default::default(),
        }
    }
}

impl Chosen {
    /// The family's variant: its overall winner (least time summed over the measured shapes), the
    /// default, or the forced one.
    pub fn get(&self, f: Family) -> Variant {
        self.family[f.index()]
    }

    /// The variant for one problem: that of the measured shape of the same class (transposes or
    /// stride) nearest in FLOPs (of any class where none shares it), else [`Chosen::get`].
    pub fn get_at(&self, f: Family, p: &Problem) -> Variant {
        // Called for every GEMM and convolution recorded: nothing is built where nothing was
        // measured, and no list is collected where something was.
        let shapes = &self.shapes[f.index()];
        if shapes.is_empty() {
            return self.get(f);
        }
        let (class, flops) = (p.class(), p.flops().max(1.0).ln());
        let any_same = shapes.iter().any(|c| c.class == class);
        shapes
            .iter()
            .filter(|c| !any_same || c.class == class)
            .min_by(|a, b| {
                let d = |c: &ShapeChoice| (c.flops.max(1.0).ln() - flops).abs();
                d(a).total_cmp(&d(b))
            })
            .map_or(self.get(f), |c| c.variant)
    }

    /// Forces `v` for every shape of `f`.
    pub fn set(&mut self, f: Family, v: Variant) {
        self.family[f.index()] = v;
        self.shapes[f.index()].clear();
    }

    /// The measured shapes' variants of `f` (empty unless measured and not forced).
    pub fn shapes(&self, f: Family) -> &[ShapeChoice] {
        &self.shapes[f.index()]
    }

    pub(crate) fn set_measured(&mut self, f: Family, fc: &FamilyChoice, features: &wgpu::Features) {
        let ok = |v: Variant| f.candidates().contains(&v) && v.supported(features);
        if !ok(fc.chosen) {
            return;
        }
        self.family[f.index()] = fc.chosen;
        self.shapes[f.index()] = fc
            .per_shape
            .iter()
            .filter(|c| ok(c.variant))
            .cloned()
            .collect();
    }
}

/// The variant forced by `FSNN_VARIANT_<FAMILY>`, if set (an unknown name is an error).
pub fn env_override(f: Family) -> Result<Option<Variant>> {
    match std::env::var(f.env_var()) {
        Ok(v) if !v.is_empty() => v
            .parse::<Variant>()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.env_var())),
        _ => Ok(None),
    }
}

/// Every `FSNN_VARIANT_*` names a candidate of its family (for a clean error before a [`Gpu`],
/// which panics on a bad one, is created).
pub fn check_env() -> Result<()> {
    for f in Family::ALL {
        if let Some(v) = env_override(f)? {
            anyhow::ensure!(
                f.candidates().contains(&v),
                "{}={v}: {f} has no {v} variant (candidates: {})",
                f.env_var(),
                f.candidates()
                    .iter()
                    .map(|v| v.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ cache

/// What the measurement found for one family on one adapter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FamilyChoice {
    /// The least time summed over the measured shapes.
    pub chosen: Variant,
    pub timings: Vec<Timing>,
    /// The fastest variant at each measured shape (absent from caches written before per-shape
    /// choice: then `chosen` serves every shape).
    #[serde(default)]
    pub per_shape: Vec<ShapeChoice>,
}

/// The fastest variant at one measured shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapeChoice {
    pub shape: String,
    /// GEMM: the transposes (`NT`); convolutions: the stride (`s2`).
    pub class: String,
    pub flops: f64,
    pub variant: Variant,
}

impl ShapeChoice {
    pub fn new(p: &Problem, variant: Variant) -> Self {
        ShapeChoice {
            shape: p.describe(),
            class: p.class(),
            flops: p.flops(),
            variant,
        }
    }
}

/// One candidate at one shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timing {
    pub shape: String,
    pub variant: Variant,
    pub ms: f64,
    pub gflops: f64,
}

/// The cache file: next to the simulation-kernel cache (`kernels.json`).
pub fn cache_path() -> PathBuf {
    fsnn_core::cache::cache_dir().join("variants.json")
}

/// The cache key: adapter, backend, driver and its version (as in `kernels.json`), and the
/// version of the variant set, so that new candidates are measured again.
pub fn cache_key(info: &AdapterSummary) -> String {
    format!(
        "{} | {} | {} {} | variants v{VARIANT_SET}",
        info.name, info.backend, info.driver, info.driver_info
    )
}

/// Bumped whenever a candidate or a measured shape changes.
const VARIANT_SET: u32 = 3;

/// One adapter's measurement: the choice per family.
pub type Measured = BTreeMap<Family, FamilyChoice>;

type Cache = BTreeMap<String, Measured>;

type Memo = HashMap<(PathBuf, String), Option<Measured>>;

fn load_cache(path: &Path) -> Cache {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// This process's view of the cache per file and key, so that each new [`Gpu`] does not reread
/// the file.
fn memo() -> &'static Mutex<Memo> {
    static M: OnceLock<Mutex<Memo>> = OnceLock::new();
    M.get_or_init(Default::default)
}

/// The cached measurement for this adapter, if any.
pub fn cached(info: &AdapterSummary) -> Option<Measured> {
    let (path, key) = (cache_path(), cache_key(info));
    memo()
        .lock()
        .unwrap()
        .entry((path.clone(), key.clone()))
        .or_insert_with(|| load_cache(&path).remove(&key))
        .clone()
}

/// What a new [`Gpu`] on this adapter dispatches: the environment's forced variants, else the
/// cached measurement, else the defaults. An invalid `FSNN_VARIANT_*` value panics with its
/// message (it is a user's typo, not something to ignore); a variant of another family, or one
/// this device cannot run, is refused the same way.
pub fn initial(info: &AdapterSummary, features: &wgpu::Features) -> Chosen {
    let mut c = Chosen::default();
    // On a CPU driver every per-invocation load costs a scalar load per SIMD lane, so the coop
    // kernels, which share their loads across a subgroup, win at every shape of `problems_full`
    // on llvmpipe (GEMM ~2×, the convolutions 1.4–4.4×; BENCHMARKS, "what a kernel costs on
    // lavapipe"). GPUs keep the blocked defaults until `fsnn tune` measures them.
    if info.device_type == "Cpu" && Variant::Coop.supported(features) {
        for f in Family::ALL {
            c.set(f, Variant::Coop);
        }
    }
    if let Some(m) = cached(info) {
        for (f, fc) in m {
            c.set_measured(f, &fc, features);
        }
    }
    for f in Family::ALL {
        match env_override(f) {
            Ok(Some(v)) => {
                assert!(
                    f.candidates().contains(&v) && v.supported(features),
                    "{}={v}: {f} has no {v} variant on this device (candidates: {:?})",
                    f.env_var(),
                    f.candidates()
                );
                c.set(f, v)
            }
            Ok(None) => {}
            Err(e) => panic!("{e:#}"),
        }
    }
    c
}

/// Stores a measurement for this adapter (in the file and in this process).
pub fn store(info: &AdapterSummary, m: &Measured) -> Result<PathBuf> {
    store_at(cache_path(), cache_key(info), m)
}

fn store_at(path: PathBuf, key: String, m: &Measured) -> Result<PathBuf> {
    // This process uses the measurement whether or not the file takes it.
    memo()
        .lock()
        .unwrap()
        .insert((path.clone(), key.clone()), Some(m.clone()));
    crate::runs::merge_into_json_map(&path, BTreeMap::from([(key, m.clone())]))?;
    Ok(path)
}

// ------------------------------------------------------------ measurement

/// One representative problem of a family.
#[derive(Debug, Clone, Copy)]
pub enum Problem {
    Gemm {
        ta: Op,
        tb: Op,
        m: usize,
        n: usize,
        k: usize,
    },
    Conv(ConvShape),
}

impl Problem {
    pub fn flops(&self) -> f64 {
        match *self {
            Problem::Gemm { m, n, k, .. } => 2.0 * (m * n * k) as f64,
            Problem::Conv(s) => s.flops(),
        }
    }
    /// What a measured shape must share with a problem to stand for it: the transposes of a
    /// GEMM, the stride of a convolution.
    pub fn class(&self) -> String {
        match self {
            Problem::Gemm { ta, tb, .. } => format!("{ta:?}{tb:?}"),
            Problem::Conv(s) => format!("s{}", s.stride),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Problem::Gemm { ta, tb, m, n, k } => format!("{ta:?}{tb:?} {m}x{n}x{k}"),
            Problem::Conv(s) => format!(
                "b{} {}->{} {}x{} k{} s{}",
                s.batch, s.cin, s.cout, s.h, s.w, s.kh, s.stride
            ),
        }
    }
}

/// The shapes each family is measured at: the fc400 GEMMs at batch 128 (feedback / forward, the
/// solve's J_fᵀ product,
/// input layer, its weight gradient), conv64's 64→64 5×5 layer on 14×14 and AlexNet-F's four
/// 3×3 layers at batch 16. `quick` shrinks them (batch 2, widths / 8) for tests.
pub fn problems(f: Family, quick: bool) -> Vec<Problem> {
    let full = problems_full(f);
    if !quick {
        return full;
    }
    let c = |n: usize| n.div_ceil(8);
    full.into_iter()
        .map(|p| match p {
            Problem::Gemm { ta, tb, m, n, k } => Problem::Gemm {
                ta,
                tb,
                m: c(m),
                n: c(n),
                k: c(k),
            },
            Problem::Conv(s) => Problem::Conv(ConvShape {
                batch: 2,
                cin: c(s.cin),
                cout: c(s.cout),
                ..s
            }),
        })
        .collect()
}

fn problems_full(f: Family) -> Vec<Problem> {
    match f {
        Family::Gemm => vec![
            Problem::Gemm {
                ta: Op::N,
                tb: Op::T,
                m: 128,
                n: 400,
                k: 400,
            },
            Problem::Gemm {
                ta: Op::N,
                tb: Op::T,
                m: 128,
                n: 400,
                k: 784,
            },
            Problem::Gemm {
                ta: Op::T,
                tb: Op::N,
                m: 400,
                n: 784,
                k: 128,
            },
            // The adjoint solve's J_fᵀ product (the step's most frequent GEMM).
            Problem::Gemm {
                ta: Op::N,
                tb: Op::N,
                m: 128,
                n: 400,
                k: 400,
            },
        ],
        Family::Conv2d | Family::Conv2dInputGrad | Family::Conv2dWeightGrad => {
            let conv = |cin, cout, hw, k, stride, pad| ConvShape {
                batch: 16,
                cin,
                h: hw,
                w: hw,
                cout,
                kh: k,
                kw: k,
                stride,
                pad,
            };
            vec![
                Problem::Conv(conv(64, 64, 14, 5, 1, 2)),
                Problem::Conv(conv(96, 256, 16, 3, 1, 1)),
                Problem::Conv(conv(256, 384, 16, 3, 2, 1)),
                Problem::Conv(conv(384, 384, 8, 3, 1, 1)),
                Problem::Conv(conv(384, 256, 8, 3, 1, 1)),
            ]
        }
    }
}

/// Operands of one problem, deterministic and ordinary (no denormals or zeros).
fn operands(gpu: &Gpu, f: Family, p: &Problem) -> (Tensor, Tensor, Tensor) {
    let fill = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(0x9E37_79B9);
                (h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    };
    let (na, nb, nc) = match (f, p) {
        (_, Problem::Gemm { m, n, k, .. }) => (m * k, k * n, m * n),
        (Family::Conv2dInputGrad, Problem::Conv(s)) => {
            (s.output_len(), s.weight_len(), s.input_len())
        }
        (Family::Conv2dWeightGrad, Problem::Conv(s)) => {
            (s.output_len(), s.input_len(), s.weight_len())
        }
        (_, Problem::Conv(s)) => (s.input_len(), s.weight_len(), s.output_len()),
    };
    (
        gpu.upload(&[na], &fill(na, 1)),
        gpu.upload(&[nb], &fill(nb, 2)),
        gpu.zeros(&[nc]),
    )
}

/// Records one problem with an explicit variant.
fn record(gpu: &Gpu, f: Family, v: Variant, p: &Problem, t: &(Tensor, Tensor, Tensor)) {
    let (a, b, c) = t;
    match (f, *p) {
        (Family::Gemm, Problem::Gemm { ta, tb, m, n, k }) => {
            ops::gemm_variant(gpu, v, ta, tb, m, n, k, 1.0, a, b, 0.0, c)
        }
        (Family::Conv2d, Problem::Conv(s)) => ops::conv2d_variant(gpu, v, &s, a, b, 1.0, 0.0, c),
        (Family::Conv2dInputGrad, Problem::Conv(s)) => {
            ops::conv2d_input_grad_variant(gpu, v, &s, a, b, 1.0, 0.0, c)
        }
        (Family::Conv2dWeightGrad, Problem::Conv(s)) => {
            ops::conv2d_weight_grad_variant(gpu, v, &s, a, b, 1.0, 0.0, c)
        }
        _ => unreachable!("problem of another family"),
    }
}

/// Timed dispatches per candidate and shape (after one warm-up); the median counts.
pub const RUNS: usize = 3;

/// Milliseconds of one recorded dispatch: its GPU timestamp span where the adapter has pass
/// timestamps (as `fsnn bench kernels` times), else the wall time of the flush that runs it.
fn time_one(gpu: &Gpu, record: impl Fn()) -> f64 {
    if gpu.ctx.has_pass_timestamps() {
        gpu.set_profiling(true);
        record();
        let p = gpu.take_profile();
        gpu.set_profiling(false);
        p.kernel_ns() as f64 / 1e6
    } else {
        let t0 = Instant::now();
        record();
        gpu.flush();
        t0.elapsed().as_secs_f64() * 1e3
    }
}

/// Times every candidate of `f` at its [`problems`] (median of [`RUNS`] dispatches after a
/// warm-up, candidates alternating; see `time_one`), keeps the fastest at each, and picks the one
/// with the least total as the family's.
pub fn measure(gpu: &Gpu, f: Family, quick: bool) -> FamilyChoice {
    let cands = &f.available(gpu)[..];
    let mut timings = Vec::new();
    let mut per_shape = Vec::new();
    let mut total = vec![0.0f64; cands.len()];
    for p in problems(f, quick) {
        let t = operands(gpu, f, &p);
        for &v in cands {
            record(gpu, f, v, &p, &t);
        }
        gpu.flush();
        let mut ms = vec![Vec::new(); cands.len()];
        for _ in 0..RUNS {
            for (i, &v) in cands.iter().enumerate() {
                ms[i].push(time_one(gpu, || record(gpu, f, v, &p, &t)));
            }
        }
        let mut best: Option<(Variant, f64)> = None;
        for (i, &v) in cands.iter().enumerate() {
            ms[i].sort_by(f64::total_cmp);
            let med = ms[i][ms[i].len() / 2];
            total[i] += med;
            if v.applies(&p) && best.is_none_or(|(_, b)| med < b) {
                best = Some((v, med));
            }
            timings.push(Timing {
                shape: p.describe(),
                variant: v,
                ms: med,
                gflops: p.flops() / (med * 1e6),
            });
        }
        per_shape.push(ShapeChoice::new(
            &p,
            best.expect("a family has candidates").0,
        ));
        let (a, b, c) = t;
        for x in [a, b, c] {
            gpu.recycle(x);
        }
    }
    let best = (0..cands.len())
        .min_by(|&i, &j| total[i].total_cmp(&total[j]))
        .unwrap();
    FamilyChoice {
        chosen: cands[best],
        timings,
        per_shape,
    }
}

/// Measures every family, stores the result in the cache (returning its path, or why it could
/// not be written: the measurement is kept either way; nothing is stored with `quick`, whose
/// shapes are not representative) and applies it to `gpu` (families forced by `FSNN_VARIANT_*`
/// keep the forced variant).
pub fn tune(gpu: &Gpu, quick: bool) -> Result<(Measured, Option<Result<PathBuf>>)> {
    let m: Measured = Family::ALL
        .iter()
        .map(|&f| (f, measure(gpu, f, quick)))
        .collect();
    let path = if quick {
        None
    } else {
        Some(store(&gpu.ctx.info, &m))
    };
    for (&f, fc) in &m {
        match env_override(f)? {
            Some(v) => gpu.set_variant(f, v),
            None => gpu.set_measured_variants(f, fc),
        }
    }
    Ok((m, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, driver_info: &str) -> AdapterSummary {
        AdapterSummary {
            index: 0,
            name: name.into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
            driver: "llvmpipe".into(),
            driver_info: driver_info.into(),
            vendor: 0x10005,
            device: 0,
        }
    }

    #[test]
    fn cache_key_separates_adapters_drivers_and_variant_sets_only() {
        let a = info("llvmpipe (LLVM 19.1.7, 256 bits)", "Mesa 25.0.7");
        let key = cache_key(&a);
        // Same adapter and driver: same key, whatever the index it was found at.
        let mut a2 = a.clone();
        a2.index = 3;
        assert_eq!(cache_key(&a2), key);
        // Another driver version or adapter name: another key.
        assert_ne!(
            cache_key(&info("llvmpipe (LLVM 19.1.7, 256 bits)", "Mesa 25.1.0")),
            key
        );
        assert_ne!(cache_key(&info("NVIDIA H200", "Mesa 25.0.7")), key);
        assert!(key.contains(&format!("variants v{VARIANT_SET}")), "{key}");
        // The stored form round-trips, with the family and variant names readable.
        let mut m = BTreeMap::new();
        m.insert(
            Family::Conv2dInputGrad,
            FamilyChoice {
                chosen: Variant::Tiled,
                timings: vec![],
                per_shape: vec![],
            },
        );
        let mut cache = Cache::new();
        cache.insert(key.clone(), m);
        let text = serde_json::to_string(&cache).unwrap();
        assert!(
            text.contains("\"conv2d_input_grad\"") && text.contains("\"tiled\""),
            "{text}"
        );
        let back: Cache = serde_json::from_str(&text).unwrap();
        assert_eq!(back[&key][&Family::Conv2dInputGrad].chosen, Variant::Tiled);
    }

    #[test]
    fn a_cache_that_cannot_be_written_names_its_path_and_keeps_the_measurement() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the cache folder should be: fails for root too.
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let path = blocker.join("fsnn").join("variants.json");
        let mut m = Measured::new();
        m.insert(
            Family::Gemm,
            FamilyChoice {
                chosen: Variant::Tiled,
                timings: vec![],
                per_shape: vec![],
            },
        );
        let key = "unwritable-test-key".to_string();
        let err = format!("{:#}", store_at(path.clone(), key.clone(), &m).unwrap_err());
        assert!(err.contains(&blocker.display().to_string()), "{err}");
        let kept = memo().lock().unwrap()[&(path.clone(), key.clone())].clone();
        assert_eq!(kept.unwrap()[&Family::Gemm].chosen, Variant::Tiled);
        // A writable one: two writers' entries both end up in the file.
        let path = dir.path().join("c").join("variants.json");
        store_at(path.clone(), "a".into(), &m).unwrap();
        store_at(path.clone(), "b".into(), &m).unwrap();
        let keys: Vec<String> = load_cache(&path).into_keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn per_shape_choice_takes_the_nearest_measured_shape_of_the_same_class() {
        let gemm = |ta, tb, m, n, k| Problem::Gemm { ta, tb, m, n, k };
        let shape = |p: Problem, v| ShapeChoice::new(&p, v);
        let fc = FamilyChoice {
            chosen: Variant::Blocked,
            timings: vec![],
            per_shape: vec![
                shape(gemm(Op::N, Op::T, 128, 400, 400), Variant::Subgroup),
                shape(gemm(Op::N, Op::T, 1024, 1024, 1024), Variant::Tiled),
                shape(gemm(Op::T, Op::N, 400, 784, 128), Variant::Blocked),
            ],
        };
        let all = wgpu::Features::SUBGROUP;
        let mut c = Chosen::default();
        c.set_measured(Family::Gemm, &fc, &all);
        let at = |c: &Chosen, p| c.get_at(Family::Gemm, &p);
        // A measured shape gets its own winner; others the nearest in FLOPs of their class.
        assert_eq!(at(&c, gemm(Op::N, Op::T, 128, 400, 400)), Variant::Subgroup);
        assert_eq!(at(&c, gemm(Op::N, Op::T, 100, 300, 300)), Variant::Subgroup);
        assert_eq!(at(&c, gemm(Op::N, Op::T, 2048, 512, 512)), Variant::Tiled);
        // TN small and large: only one TN shape was measured.
        assert_eq!(
            at(&c, gemm(Op::T, Op::N, 4096, 4096, 4096)),
            Variant::Blocked
        );
        // No NN shape measured: the nearest of any class.
        assert_eq!(at(&c, gemm(Op::N, Op::N, 900, 1000, 1100)), Variant::Tiled);
        assert_eq!(c.get(Family::Gemm), Variant::Blocked);
        // Other families keep theirs.
        let conv = Problem::Conv(ConvShape {
            batch: 1,
            cin: 3,
            h: 8,
            w: 8,
            cout: 4,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        });
        assert_eq!(
            c.get_at(Family::Conv2d, &conv),
            Chosen::default().get(Family::Conv2d)
        );
        // A device without subgroups drops the shapes whose winner it cannot run.
        let mut plain = Chosen::default();
        plain.set_measured(Family::Gemm, &fc, &wgpu::Features::empty());
        assert_eq!(
            at(&plain, gemm(Op::N, Op::T, 128, 400, 400)),
            Variant::Tiled
        );
        // Forcing a variant overrides every shape.
        c.set(Family::Gemm, Variant::Coop);
        assert_eq!(at(&c, gemm(Op::N, Op::T, 1024, 1024, 1024)), Variant::Coop);
        assert!(c.shapes(Family::Gemm).is_empty());
    }

    #[test]
    fn every_variant_has_a_kernel_and_names_round_trip() {
        assert!(!Variant::Subgroup.supported(&wgpu::Features::empty()));
        assert!(Variant::Tiled.supported(&wgpu::Features::empty()));
        for f in Family::ALL {
            assert_eq!(f.candidates()[0], Chosen::default().get(f));
            for &v in f.candidates() {
                assert!(
                    crate::gpu::kernel_source(f.kernel(v)).is_some(),
                    "{f} {v}: no kernel {}",
                    f.kernel(v)
                );
                assert_eq!(v.name().parse::<Variant>().unwrap(), v);
            }
        }
        assert_eq!(
            Family::Conv2dInputGrad.env_var(),
            "FSNN_VARIANT_CONV2D_INPUT_GRAD"
        );
        assert!("fast".parse::<Variant>().is_err());
    }
}
