//! Turns a kernel file under `shaders/` into one WGSL module and validates it with naga.
//!
//! This file is compiled twice: by `build.rs` (so a WGSL error fails the build) and into the library
//! (so tests can show that a broken shader is rejected with its file and line). It must therefore
//! depend on nothing but `std` and `naga`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where each line of an assembled module came from, so naga's errors can name the real file.
#[derive(Debug, Clone)]
pub struct LineOrigin {
    pub file: PathBuf,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct AssembledShader {
    pub name: String,
    pub source: String,
    pub origins: Vec<LineOrigin>,
    /// Every file read while assembling (for `cargo:rerun-if-changed`).
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ShaderError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ShaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

impl std::error::Error for ShaderError {}

/// Reads `dir/<name>.wgsl`, replacing each `#import foo` line with `dir/shared/foo.wgsl` (once per
/// module, recursively), and records where every output line came from.
pub fn assemble(dir: &Path, name: &str) -> Result<AssembledShader, ShaderError> {
    let mut out = AssembledShader {
        name: name.to_string(),
        source: String::new(),
        origins: Vec::new(),
        files: Vec::new(),
    };
    let mut seen = Vec::new();
    let path = dir.join(format!("{name}.wgsl"));
    include_file(dir, &path, &mut out, &mut seen)?;
    Ok(out)
}

fn include_file(
    dir: &Path,
    path: &Path,
    out: &mut AssembledShader,
    seen: &mut Vec<String>,
) -> Result<(), ShaderError> {
    let text = std::fs::read_to_string(path).map_err(|e| ShaderError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read shader: {e}"),
    })?;
    out.files.push(path.to_path_buf());
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("#import") {
            let module = rest.trim();
            if module.is_empty()
                || !module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(ShaderError {
                    file: path.to_path_buf(),
                    line: i + 1,
                    column: 1,
                    message: format!("bad #import directive `{}`", line.trim()),
                });
            }
            if seen.iter().any(|s| s == module) {
                continue;
            }
            seen.push(module.to_string());
            let shared = dir.join("shared").join(format!("{module}.wgsl"));
            if !shared.exists() {
                return Err(ShaderError {
                    file: path.to_path_buf(),
                    line: i + 1,
                    column: 1,
                    message: format!("#import {module}: no file {}", shared.display()),
                });
            }
            include_file(dir, &shared, out, seen)?;
        } else {
            out.source.push_str(line);
            out.source.push('\n');
            out.origins.push(LineOrigin {
                file: path.to_path_buf(),
                line: i + 1,
            });
        }
    }
    Ok(())
}

/// Parses and validates an assembled module; errors name the original file and line.
pub fn validate(shader: &AssembledShader) -> Result<naga::Module, ShaderError> {
    let locate = |offset: usize, message: String| -> ShaderError {
        let before = &shader.source[..offset.min(shader.source.len())];
        let line_idx = before.matches('\n').count();
        let column = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
        match shader.origins.get(line_idx) {
            Some(o) => ShaderError {
                file: o.file.clone(),
                line: o.line,
                column,
                message,
            },
            None => ShaderError {
                file: PathBuf::from(format!("{}.wgsl", shader.name)),
                line: line_idx + 1,
                column,
                message,
            },
        }
    };
    let module = naga::front::wgsl::parse_str(&shader.source).map_err(|e| {
        let offset = e
            .labels()
            .next()
            .map(|(span, _)| span.to_range().map(|r| r.start).unwrap_or(0))
            .unwrap_or(0);
        locate(offset, e.message().to_string())
    })?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    validator.validate(&module).map_err(|e| {
        let offset = e
            .spans()
            .next()
            .map(|(span, _)| span.to_range().map(|r| r.start).unwrap_or(0))
            .unwrap_or(0);
        let mut msg = e.as_inner().to_string();
        let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e.as_inner());
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        locate(offset, msg)
    })?;
    Ok(module)
}

/// The WGSL compiler a kernel's text is meant for. The files under `shaders/` are one source per
/// kernel; the two compilers disagree only on directives, which [`for_compiler`] adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compiler {
    /// naga (wgpu's native back ends): refuses `enable subgroups;` (it gates subgroup operations
    /// by device feature instead) and knows no `subgroup_uniformity` diagnostic.
    Naga,
    /// Tint (Dawn: Chrome, Edge and Dawn-based hosts): requires `enable subgroups;` before any
    /// subgroup operation, and rejects subgroup operations its uniformity analysis cannot prove
    /// uniform.
    Tint,
}

impl Compiler {
    pub const ALL: [Compiler; 2] = [Compiler::Naga, Compiler::Tint];
}

/// Whether a validated module uses subgroup operations or builtins: it fails validation once the
/// subgroup capabilities are taken away. Asking the validator (rather than scanning the text for
/// `subgroup`) cannot be fooled by comments or by helpers imported but never called.
pub fn uses_subgroups(module: &naga::Module) -> bool {
    let without = naga::valid::Capabilities::all()
        - naga::valid::Capabilities::SUBGROUP
        - naga::valid::Capabilities::SUBGROUP_BARRIER;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), without)
        .validate(module)
        .is_err()
}

/// The text of an assembled, naga-valid kernel as `compiler` needs it.
///
/// For Tint, a subgroup kernel gains `enable subgroups;` and turns off the `subgroup_uniformity`
/// diagnostic. Six of the eight subgroup kernels trip that analysis: their shared path is entered
/// on a `subgroupAll(..)` result (the same in every invocation of the subgroup), and their
/// shuffles read only lanes of the invocation's own group of 8, which share its loop bounds; the
/// analysis sees only that the conditions derive from `local_invocation_index`. naga does no such
/// analysis, so with the diagnostic off Tint compiles the very program naga already runs (and the
/// GPU-vs-twin tests check), rather than a restructured one. The text past the header is unchanged.
pub fn for_compiler(source: &str, subgroups: bool, compiler: Compiler) -> String {
    match compiler {
        Compiler::Naga => source.to_string(),
        Compiler::Tint if subgroups => {
            format!("{TINT_SUBGROUP_HEADER}{source}")
        }
        Compiler::Tint => source.to_string(),
    }
}

/// The directives Tint needs before a subgroup kernel (see [`for_compiler`]).
pub const TINT_SUBGROUP_HEADER: &str = "enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n";

/// Kernel names: every `*.wgsl` directly under `dir` (shared helpers live in `dir/shared`).
pub fn kernel_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("wgsl") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}
