//! Portability: every kernel's final text through compilers other than the one fsnn runs on.
//!
//! - naga translates every kernel to SPIR-V (checked by `spirv-val`), MSL and HLSL: the texts
//!   wgpu's Vulkan, Metal and DX12 back ends would hand their drivers.
//! - Tint, inside Dawn (the npm `webgpu` package run by Node, tests/dawn/portability.mjs),
//!   compiles every kernel's Tint text into a pipeline on a device with WebGPU's default limits
//!   (and the `subgroups` feature for the subgroup kernels, where the adapter offers it), then runs
//!   three GEMM variants, `neuron_step` and `solver_track` on random data and matches fsnn's CPU
//!   twins.
//!
//! Kernels come from `fsnn::gpu::kernel_names()`, so a new kernel is checked without a change here.
//! Node, the `webgpu` package and `spirv-val` are found on PATH or through `FSNN_NODE`,
//! `FSNN_WEBGPU_DIR` (the package's directory; default `target/portability/node_modules/webgpu`,
//! where `.ci/install.sh` installs it) and `FSNN_SPIRV_VAL`. A missing tool is a failure naming
//! the install step; `FSNN_SKIP_PORTABILITY=1` skips that part knowingly, with a loud message.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

use fsnn::cpu;
use fsnn::gpu::{kernel_names, kernel_source, kernel_source_for, kernel_uses_subgroups};
use fsnn::ops::{NeuronStep, Op, SolverIter, SolverLayout, SolverMode};
use fsnn::shader_source::Compiler;
use fsnn_tests::{check, Rng};
use serde_json::{json, Value};

fn skip_allowed() -> bool {
    std::env::var("FSNN_SKIP_PORTABILITY").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A tool this test needs is missing: a failure that says how to install it, unless the user
/// opted out by name (`FSNN_SKIP_PORTABILITY=1`), in which case it says so loudly and skips.
fn absent(what: &str, fix: &str) {
    let msg = format!("{what} not found; {fix} (or `bash .ci/install.sh` as root for everything)");
    if !skip_allowed() {
        panic!("{msg}; set FSNN_SKIP_PORTABILITY=1 to skip this check knowingly");
    }
    let bar = "!".repeat(100);
    eprintln!("\n{bar}\nPORTABILITY CHECK SKIPPED (FSNN_SKIP_PORTABILITY): {msg}\n{bar}\n");
}

/// `env`'s value, else `name` if it runs from PATH.
fn tool(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    Command::new(name)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from(name))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn parse(name: &str, src: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: naga cannot parse its own text: {e}"));
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap_or_else(|e| panic!("{name}: naga rejects its own text: {e:?}"));
    (module, info)
}

#[test]
fn naga_translates_every_kernel_to_spirv_msl_and_hlsl() {
    let names = kernel_names();
    let dir = tempfile::tempdir().unwrap();
    let (mut spv, mut msl, mut hlsl) = (Vec::new(), 0usize, 0usize);
    let mut failures = Vec::new();
    for name in &names {
        let (module, info) = parse(name, kernel_source(name).unwrap());
        // SPIR-V 1.3 (Vulkan 1.1) is the first with the GroupNonUniform operations subgroup
        // kernels need; wgpu asks for it on every Vulkan device that has them.
        let opts = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        match naga::back::spv::write_vec(&module, &info, &opts, None) {
            Ok(words) => {
                let path = dir.path().join(format!("{name}.spv"));
                let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                std::fs::write(&path, bytes).unwrap();
                spv.push((name, path));
            }
            Err(e) => failures.push(format!("{name}: SPIR-V: {e}")),
        }
        // MSL 2.1 is the first with the SIMD-group functions behind the subgroup operations.
        let opts = naga::back::msl::Options {
            lang_version: (2, 1),
            ..Default::default()
        };
        match naga::back::msl::write_string(&module, &info, &opts, &Default::default()) {
            Ok(_) => msl += 1,
            Err(e) => failures.push(format!("{name}: MSL: {e}")),
        }
        // Shader model 6.0 is the first with the wave intrinsics.
        let opts = naga::back::hlsl::Options {
            shader_model: naga::back::hlsl::ShaderModel::V6_0,
            ..Default::default()
        };
        let pipeline = naga::back::hlsl::PipelineOptions { entry_point: None };
        let mut w = naga::back::hlsl::Writer::new(String::new(), &opts, &pipeline);
        match w.write(&module, &info, None) {
            Ok(_) => hlsl += 1,
            Err(e) => failures.push(format!("{name}: HLSL: {e}")),
        }
    }
    let n = names.len();
    println!(
        "naga: SPIR-V {}/{n}, MSL {msl}/{n}, HLSL {hlsl}/{n}",
        spv.len()
    );
    assert!(
        failures.is_empty(),
        "naga back ends failed:\n{}",
        failures.join("\n")
    );

    let Some(val) = tool("spirv-val", "FSNN_SPIRV_VAL") else {
        absent(
            "spirv-val",
            "install Debian's spirv-tools (apt-get install spirv-tools)",
        );
        return;
    };
    let mut invalid = Vec::new();
    for (name, path) in &spv {
        let out = Command::new(&val)
            .args(["--target-env", "vulkan1.1"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", val.display()));
        if !out.status.success() {
            invalid.push(format!(
                "{name}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    println!(
        "spirv-val (vulkan1.1): {}/{} valid",
        spv.len() - invalid.len(),
        spv.len()
    );
    assert!(
        invalid.is_empty(),
        "spirv-val rejects:\n{}",
        invalid.join("\n")
    );
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("buffer is not an array")
        .iter()
        .map(|w| f32::from_bits(w.as_u64().expect("word is not a number") as u32))
        .collect()
}

/// Words `range` of buffer `buffer` (binding − 1) against the twin's whole buffer `want`.
struct Expect {
    buffer: usize,
    label: &'static str,
    range: Range<usize>,
    want: Vec<f32>,
    tol: f64,
}

fn expect(
    buffer: usize,
    label: &'static str,
    range: Range<usize>,
    want: Vec<f32>,
    tol: f64,
) -> Expect {
    Expect {
        buffer,
        label,
        range,
        want,
        tol,
    }
}

/// One dispatch for Dawn, and the buffers (by binding − 1) to compare with the CPU twin's.
struct Case {
    name: String,
    kernel: &'static str,
    params: Vec<u32>,
    buffers: Vec<Vec<f32>>,
    groups: [u32; 3],
    expect: Vec<Expect>,
}

/// GEMM variants share one parameter layout (crate::ops::gemm_variant); each covers a different
/// block of C per workgroup.
fn gemm_case(rng: &mut Rng, kernel: &'static str, block: (usize, usize)) -> Case {
    let (m, n, k, alpha, beta) = (37usize, 53usize, 29usize, 0.5f32, 1.0f32);
    let (ta, tb) = (Op::N, Op::T);
    let a = rng.vec(m * k, -1.0, 1.0);
    let b = rng.vec(k * n, -1.0, 1.0);
    let c0 = rng.vec(m * n, -1.0, 1.0);
    let mut c = c0.clone();
    cpu::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut c);
    let params = [m, n, k, 0, k, 1, 0, 1, k, 0, n, 0]
        .iter()
        .map(|&v| v as u32)
        .chain([alpha.to_bits(), beta.to_bits()])
        .collect();
    Case {
        name: format!("{kernel} N·Tᵀ {m}x{n}x{k} alpha={alpha} beta={beta}"),
        kernel,
        params,
        buffers: vec![a, b, c0],
        groups: [n.div_ceil(block.1) as u32, m.div_ceil(block.0) as u32, 1],
        expect: vec![expect(2, "C", 0..m * n, c, 1e-5)],
    }
}

fn neuron_step_case(rng: &mut Rng) -> Case {
    let n = 1237usize;
    let step = NeuronStep {
        vth: 2.0,
        leak: 0.95,
        has_feedback: true,
        x_offset: n,
    };
    let (u0, acc0) = (rng.vec(n, -1.0, 2.0), rng.vec(n, 0.0, 3.0));
    let x = rng.vec(2 * n, -0.5, 2.5);
    let fb = rng.vec(n, -1.0, 1.0);
    let (mut u, mut acc, mut s) = (u0.clone(), acc0.clone(), vec![0.0; n]);
    cpu::neuron_step(&mut u, &mut acc, &mut s, &x, &fb, step);
    Case {
        name: format!("neuron_step n={n} leak={} per_step", step.leak),
        kernel: "neuron_step",
        params: vec![
            n as u32,
            step.x_offset as u32,
            1,
            0,
            step.vth.to_bits(),
            step.leak.to_bits(),
        ],
        buffers: vec![u0, acc0, vec![0.5; n], x, fb],
        groups: [n.div_ceil(fsnn::gpu::WG as usize) as u32, 1, 1],
        expect: vec![
            expect(0, "u", 0..n, u, 1e-6),
            expect(1, "rate acc", 0..n, acc, 1e-6),
            expect(2, "spikes", 0..n, s, 0.0),
        ],
    }
}

/// The batch-global solver step (shaders/solver_track.wgsl, whose f32-maximum literal Tint once
/// rejected) of an Anderson solve with a live least-squares problem, as in tests/kernels.rs.
fn solver_track_case(rng: &mut Rng) -> Case {
    let l = SolverLayout {
        mode: SolverMode::Anderson,
        batch: 3,
        dim: 37,
        slots: 5,
    };
    let i = SolverIter::new(&l, 2);
    let (n, st) = (l.batch * l.dim, l.state_offset());
    let hist = rng.vec(l.hist_len(), -1.0, 1.0);
    let vecs: Vec<Vec<f32>> = (0..5).map(|_| rng.vec(n, -1.0, 1.0)).collect();
    let mut scal = rng.vec(l.scal_len(), -1.0, 1.0);
    // A consistent Gram matrix of the stored Δg rows, so the least squares are well posed.
    let gram0 = st + 8;
    for b in 0..l.batch {
        for p in 0..l.slots {
            for q in 0..l.slots {
                let row = |j: usize| ((b * l.slots + j) * 2 + 1) * l.dim;
                let v: f32 = (0..l.dim)
                    .map(|e| hist[row(p) + e] * hist[row(q) + e])
                    .sum();
                scal[gram0 + (b * l.slots + p) * l.slots + q] = v;
            }
        }
    }
    let [jx, x, gl, gold, step] = [0, 1, 2, 3, 4].map(|k| &vecs[k]);
    cpu::solver_dots(&l, i, &hist, jx, x, gl, gold, step, &mut scal);
    scal[st] = 1e9; // lowest Σg² so far: this iteration improves on it
    scal[st + 1] = 0.0; // not done
    let (threshold, eps2, reg) = (30usize, 0.0f32, 1e-6f32);
    let before = scal.clone();
    let gamma0 = gram0 + l.batch * l.slots * l.slots;
    cpu::solver_track(&l, i, threshold, eps2, reg, &mut scal);
    // Else a kernel that wrote nothing would pass.
    assert!(
        scal[gamma0..] != before[gamma0..] && scal[st..st + 4] != before[st..st + 4],
        "the twin left the coefficients or the state unchanged"
    );
    let params = [
        l.batch,
        l.slots,
        l.mode as usize,
        i.it,
        i.count,
        i.slot,
        threshold,
        st,
        gram0,
        gamma0,
    ]
    .iter()
    .map(|&v| v as u32)
    .chain([eps2.to_bits(), reg.to_bits()])
    .collect();
    let len = scal.len();
    Case {
        name: format!(
            "solver_track Anderson {}x{} slots={} it=2",
            l.batch, l.dim, l.slots
        ),
        kernel: "solver_track",
        params,
        buffers: vec![before],
        groups: [1, 1, 1],
        expect: vec![
            expect(0, "scal", 0..len, scal.clone(), 2e-4),
            // done, improved, iterations: decisions, so exact.
            expect(0, "state words", st + 1..st + 4, scal, 0.0),
        ],
    }
}

#[test]
fn tint_in_dawn_compiles_every_kernel_and_runs_five_against_their_twins() {
    let Some(node) = tool("node", "FSNN_NODE") else {
        absent("node", "install Node (apt-get install nodejs npm)");
        return;
    };
    let pkg = std::env::var_os("FSNN_WEBGPU_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/portability/node_modules/webgpu"));
    if !pkg.join("index.js").exists() {
        absent(
            &format!("the npm package `webgpu` (Dawn) at {}", pkg.display()),
            "run `npm install --prefix target/portability webgpu@0.6.2` in the repository, or set \
             FSNN_WEBGPU_DIR to the package's directory",
        );
        return;
    }

    let names = kernel_names();
    let kernels: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({
                "name": n,
                "code": kernel_source_for(n, Compiler::Tint).unwrap(),
                "subgroups": kernel_uses_subgroups(n).unwrap(),
            })
        })
        .collect();
    let mut rng = Rng::new(25);
    let cases = [
        gemm_case(&mut rng, "gemm", (64, 64)),
        gemm_case(&mut rng, "gemm_subgroup", (64, 64)),
        // Rows × columns per workgroup of gemm_coop: 8 invocations of 16 × 4 (ops::GEMM_COOP_BLOCK).
        gemm_case(&mut rng, "gemm_coop", (16, 32)),
        neuron_step_case(&mut rng),
        solver_track_case(&mut rng),
    ];
    let input = json!({
        "kernels": kernels,
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "kernel": c.kernel,
            "params": c.params,
            "buffers": c.buffers.iter().map(|b| bits(b)).collect::<Vec<_>>(),
            "groups": c.groups,
        })).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let (inp, outp) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&inp, serde_json::to_vec(&input).unwrap()).unwrap();
    let script = repo_root().join("tests/dawn/portability.mjs");
    let run = Command::new(&node)
        .arg(&script)
        .arg(&pkg)
        .arg(&inp)
        .arg(&outp)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", node.display()));
    assert!(
        run.status.success(),
        "{} {} failed ({}):\n{}{}",
        node.display(),
        script.display(),
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let out: Value = serde_json::from_slice(&std::fs::read(&outp).unwrap())
        .unwrap_or_else(|e| panic!("{}: bad output: {e}", outp.display()));
    let offered = out["subgroups_offered"].as_bool().unwrap();
    println!(
        "Dawn adapter: {} (subgroups offered: {offered}), default limits {}",
        out["adapter"], out["limits"]
    );

    let results = out["kernels"].as_array().unwrap();
    assert_eq!(
        results.len(),
        names.len(),
        "Dawn answered for some kernels only"
    );
    let mut failed = Vec::new();
    let (mut ok, mut skipped) = (0, Vec::new());
    for r in results {
        let name = r["name"].as_str().unwrap();
        if r["ok"].as_bool().unwrap() {
            ok += 1;
        } else if r["skipped"].as_bool().unwrap() {
            skipped.push(name);
        } else {
            failed.push(format!("{name}: {}", r["messages"]));
        }
    }
    println!("Tint (Dawn): {ok}/{} kernels build a pipeline", names.len());
    if !skipped.is_empty() {
        let bar = "!".repeat(100);
        eprintln!(
            "\n{bar}\nNOT CHECKED (the adapter offers no `subgroups`): {}\n{bar}\n",
            skipped.join(", ")
        );
    }
    assert!(failed.is_empty(), "Tint rejects:\n{}", failed.join("\n"));
    assert!(ok > 0 && ok + skipped.len() == names.len());

    let ran = out["cases"].as_array().unwrap();
    assert_eq!(ran.len(), cases.len());
    for (case, r) in cases.iter().zip(ran) {
        if skipped.contains(&case.kernel) {
            continue;
        }
        assert!(
            r["error"].is_null(),
            "{} in Dawn: {}",
            case.name,
            r["error"]
        );
        let bufs = r["buffers"].as_array().unwrap();
        for e in &case.expect {
            check(
                &format!("Dawn {} {}", case.name, e.label),
                &floats(&bufs[e.buffer])[e.range.clone()],
                &e.want[e.range.clone()],
                e.tol,
            );
        }
    }
}
