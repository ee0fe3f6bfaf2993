//! Assembles every kernel under `shaders/`, validates it with naga (a WGSL error fails the build and
//! names the file and line), and embeds the assembled sources in the library.

#[path = "src/shader_source.rs"]
mod shader_source;

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let dir = manifest.join("../../shaders");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed={}", dir.join("shared").display());
    let names = shader_source::kernel_names(&dir).expect("cannot list shaders/");
    // (name, naga text, Tint text, uses subgroups): one source per kernel, with each compiler's
    // directives.
    let mut table = String::from("pub static KERNEL_SOURCES: &[(&str, &str, &str, bool)] = &[\n");
    let mut failures = Vec::new();
    for name in &names {
        match shader_source::assemble(&dir, name) {
            Ok(shader) => {
                for f in &shader.files {
                    println!("cargo:rerun-if-changed={}", f.display());
                }
                let module = match shader_source::validate(&shader) {
                    Ok(m) => m,
                    Err(e) => {
                        failures.push(e.to_string());
                        continue;
                    }
                };
                let subgroups = shader_source::uses_subgroups(&module);
                let mut paths = Vec::new();
                for compiler in shader_source::Compiler::ALL {
                    let text = shader_source::for_compiler(&shader.source, subgroups, compiler);
                    let tag = format!("{compiler:?}").to_lowercase();
                    let path = out_dir.join(format!("{name}.{tag}.wgsl"));
                    std::fs::write(&path, text).unwrap();
                    paths.push(path.display().to_string());
                }
                // Compiler::ALL lists Naga, then Tint: the table's order.
                table.push_str(&format!(
                    "    ({name:?}, include_str!({:?}), include_str!({:?}), {subgroups}),\n",
                    paths[0], paths[1]
                ));
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    table.push_str("];\n");
    if !failures.is_empty() {
        for f in &failures {
            println!("cargo:warning=WGSL error: {f}");
        }
        panic!("invalid WGSL:\n{}", failures.join("\n"));
    }
    std::fs::write(out_dir.join("kernel_sources.rs"), table).unwrap();
}
