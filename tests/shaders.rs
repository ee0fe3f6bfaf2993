//! Shaders: every embedded kernel becomes a pipeline on the device, and a broken WGSL file is
//! rejected with its own file and line, also when the error sits in an imported shared file.

use std::path::{Path, PathBuf};

use fsnn::shader_source::{
    assemble, kernel_names, uses_subgroups, validate, Compiler, ShaderError, TINT_SUBGROUP_HEADER,
};
use fsnn_tests::gpu;

fn shaders_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shaders")
}

#[test]
fn every_shader_file_is_embedded() {
    let on_disk = kernel_names(&shaders_dir()).expect("cannot list shaders/");
    let mut embedded: Vec<String> = fsnn::gpu::kernel_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    embedded.sort();
    println!("{} kernels embedded", embedded.len());
    assert!(
        on_disk.len() >= 24,
        "only {} shader files found",
        on_disk.len()
    );
    assert_eq!(embedded, on_disk);
}

#[test]
fn every_embedded_kernel_builds_a_pipeline() {
    let g = gpu();
    let device = &g.ctx.device;
    let names = fsnn::gpu::kernel_names();
    assert!(names.contains(&"gemm") && names.contains(&"peak_fma"));
    let mut failures = Vec::new();
    for name in &names {
        // Subgroup kernels need the feature (the device enables it where offered).
        if fsnn::gpu::kernel_uses_subgroups(name) == Some(true)
            && !g.ctx.features.contains(wgpu::Features::SUBGROUP)
        {
            println!("{name:<24} skipped: the adapter has no SUBGROUP");
            continue;
        }
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(fsnn::gpu::kernel_source(name).unwrap().into()),
        });
        let _pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        match pollster::block_on(scope.pop()) {
            None => println!("{name:<24} pipeline ok"),
            Some(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "pipelines failed:\n{}",
        failures.join("\n")
    );
}

/// A kernel directory in a temp dir: `files` are (relative path, contents).
fn shader_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    for (path, text) in files {
        std::fs::write(dir.path().join(path), text).unwrap();
    }
    dir
}

fn rejected(dir: &Path, kernel: &str) -> ShaderError {
    let shader = assemble(dir, kernel).expect("assembly should succeed");
    let err = validate(&shader).expect_err("broken WGSL was accepted");
    println!("rejected as expected: {err}");
    err
}

const HELPERS: &str = "// helpers\nfn twice(x: f32) -> f32 {\n    return 2.0 * x;\n}\n";

const GOOD_KERNEL: &str = "#import helpers

@group(0) @binding(0) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    y[id.x] = twice(y[id.x]);
}
";

#[test]
fn the_unbroken_tree_validates() {
    // Guards the tests below: they must fail because of the planted error, not the scaffolding.
    let dir = shader_tree(&[("shared/helpers.wgsl", HELPERS), ("k.wgsl", GOOD_KERNEL)]);
    let shader = assemble(dir.path(), "k").unwrap();
    validate(&shader).unwrap_or_else(|e| panic!("valid tree rejected: {e}"));
}

#[test]
fn parse_error_names_the_kernel_file_and_line() {
    // Line 7 loses its semicolon; naga stops at the next token, `let` on line 8. The import
    // shifts the assembled line numbers by the helper's 4, which the report must undo.
    let broken = GOOD_KERNEL.replace("twice(y[id.x]);", "twice(y[id.x])\n    let z = 1.0;");
    let dir = shader_tree(&[("shared/helpers.wgsl", HELPERS), ("k.wgsl", &broken)]);
    let err = rejected(dir.path(), "k");
    assert_eq!(err.file, dir.path().join("k.wgsl"));
    assert_eq!(err.line, 8, "{err}");
    assert!(err.to_string().contains("k.wgsl:"), "{err}");
}

#[test]
fn type_error_names_the_exact_line() {
    let broken = GOOD_KERNEL.replace(
        "    y[id.x] = twice(y[id.x]);",
        "    let n: u32 = 1u;\n    y[id.x] = twice(n);",
    );
    let dir = shader_tree(&[("shared/helpers.wgsl", HELPERS), ("k.wgsl", &broken)]);
    let err = rejected(dir.path(), "k");
    assert_eq!(err.file, dir.path().join("k.wgsl"));
    assert_eq!(err.line, 8, "{err}");
}

#[test]
fn validator_error_names_the_file_and_line() {
    // Parses and type-checks, but naga's validator refuses a store through a read-only binding.
    let kernel = "#import helpers

@group(0) @binding(0) var<storage, read> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let v = twice(y[id.x]);
    y[id.x] = v;
}
";
    let dir = shader_tree(&[("shared/helpers.wgsl", HELPERS), ("k.wgsl", kernel)]);
    let shader = assemble(dir.path(), "k").unwrap();
    naga::front::wgsl::parse_str(&shader.source)
        .expect("this case must get past the parser to exercise the validator");
    let err = rejected(dir.path(), "k");
    assert_eq!(err.file, dir.path().join("k.wgsl"));
    assert_eq!(err.line, 8, "{err}");
}

#[test]
fn error_in_an_imported_file_names_that_file() {
    let broken_helpers = HELPERS.replace("return 2.0 * x;", "return 2.0 * undefined_name;");
    let dir = shader_tree(&[
        ("shared/helpers.wgsl", &broken_helpers),
        ("k.wgsl", GOOD_KERNEL),
    ]);
    let err = rejected(dir.path(), "k");
    assert_eq!(err.file, dir.path().join("shared").join("helpers.wgsl"));
    assert_eq!(err.line, 3, "{err}");
}

#[test]
fn missing_import_names_the_importing_line() {
    let kernel = format!(
        "// header\n{}",
        GOOD_KERNEL.replace("helpers", "no_such_file")
    );
    let dir = shader_tree(&[("k.wgsl", &kernel)]);
    let err = assemble(dir.path(), "k").expect_err("missing import accepted");
    println!("rejected as expected: {err}");
    assert_eq!(err.file, dir.path().join("k.wgsl"));
    assert_eq!(err.line, 2);
}

#[test]
fn subgroup_use_is_found_by_the_validator_not_by_name() {
    let plain = shader_tree(&[(
        "k.wgsl",
        "// subgroupAdd in a comment is no use\n@group(0) @binding(0) var<storage, read_write> o: \
         array<f32>;\n@compute @workgroup_size(1) fn main() { o[0] = 1.0; }\n",
    )]);
    let uses = shader_tree(&[(
        "k.wgsl",
        "@group(0) @binding(0) var<storage, read_write> o: array<f32>;\n@compute \
         @workgroup_size(32) fn main(@builtin(subgroup_invocation_id) l: u32) { o[l] = \
         subgroupAdd(f32(l)); }\n",
    )]);
    let check = |dir: &Path| {
        let shader = assemble(dir, "k").unwrap();
        uses_subgroups(&validate(&shader).unwrap())
    };
    assert!(!check(plain.path()));
    assert!(check(uses.path()));
}

/// One source per kernel: Tint's text is naga's, plus `enable subgroups;` and the uniformity
/// diagnostic where the kernel uses subgroups; naga still refuses that header (were it to accept
/// it, one text would serve both compilers).
#[test]
fn tint_text_is_naga_text_plus_directives_on_subgroup_kernels_only() {
    let mut with_header = Vec::new();
    for name in fsnn::gpu::kernel_names() {
        let naga_text = fsnn::gpu::kernel_source_for(name, Compiler::Naga).unwrap();
        let tint_text = fsnn::gpu::kernel_source_for(name, Compiler::Tint).unwrap();
        assert_eq!(naga_text, fsnn::gpu::kernel_source(name).unwrap());
        if fsnn::gpu::kernel_uses_subgroups(name).unwrap() {
            assert_eq!(
                tint_text,
                format!("{TINT_SUBGROUP_HEADER}{naga_text}"),
                "{name}"
            );
            assert!(
                naga::front::wgsl::parse_str(tint_text).is_err(),
                "{name}: naga now accepts `enable subgroups;`"
            );
            with_header.push(name);
        } else {
            assert_eq!(tint_text, naga_text, "{name}");
            assert!(!naga_text.contains("subgroupShuffle"), "{name}");
        }
    }
    println!("Tint header on: {with_header:?}");
    assert!(with_header.contains(&"gemm_subgroup") && with_header.contains(&"gemm_coop"));
}

/// The variants fsnn gates on `Features::SUBGROUP` are exactly those whose kernels use subgroups,
/// and every family keeps a candidate that needs no feature (what a WebGPU without `subgroups`
/// runs).
#[test]
fn subgroup_gated_variants_are_exactly_the_subgroup_kernels() {
    use fsnn::variants::Family;
    let none = wgpu::Features::empty();
    for f in Family::ALL {
        for &v in f.candidates() {
            let kernel = f.kernel(v);
            let uses = fsnn::gpu::kernel_uses_subgroups(kernel).unwrap();
            assert_eq!(
                uses,
                !v.supported(&none),
                "{f} {v} ({kernel}): uses subgroups {uses}, gated {}",
                !v.supported(&none)
            );
            assert!(
                v.fallback(&none).supported(&none) || !v.supported(&none),
                "{f} {v}"
            );
        }
        assert!(
            f.candidates().iter().any(|v| v.supported(&none)),
            "{f} has no variant for a device without subgroups"
        );
    }
}

#[test]
fn browser_webgpu_gets_the_tint_text_native_back_ends_the_naga_text() {
    use fsnn::gpu::wgsl_compiler;
    assert_eq!(wgsl_compiler(wgpu::Backend::BrowserWebGpu), Compiler::Tint);
    for b in [
        wgpu::Backend::Vulkan,
        wgpu::Backend::Metal,
        wgpu::Backend::Dx12,
        wgpu::Backend::Gl,
    ] {
        assert_eq!(wgsl_compiler(b), Compiler::Naga, "{b:?}");
    }
}
