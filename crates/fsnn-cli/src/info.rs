//! `fsnn info`: the adapter fsnn would use, its features and limits.

use anyhow::Result;
use fsnn::gpu::{list_adapters, GpuContext};
use fsnn::variants::{self, Family};
use serde_json::{json, Map, Value};

use crate::Global;

#[derive(clap::Args)]
pub struct Args {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// List every adapter the drivers expose (index, name, backend, type, driver).
    #[arg(long)]
    all: bool,
}

/// Every field of `wgpu::Limits` by name. The pattern names all fields without `..`, so a wgpu
/// upgrade that adds a limit fails to compile here instead of silently dropping it from reports
/// (wgpu's own serde derive would cost a rebuild of wgpu with another feature set).
macro_rules! limits_object {
    ($limits:expr; $($field:ident),* $(,)?) => {{
        let wgpu::Limits { $($field),* } = $limits;
        let mut m = Map::new();
        $(m.insert(stringify!($field).to_string(), json!($field));)*
        m
    }};
}

pub fn limits_json(l: &wgpu::Limits) -> Map<String, Value> {
    limits_object!(l.clone();
        max_texture_dimension_1d, max_texture_dimension_2d, max_texture_dimension_3d,
        max_texture_array_layers, max_bind_groups, max_bind_groups_plus_vertex_buffers,
        max_bindings_per_bind_group, max_dynamic_uniform_buffers_per_pipeline_layout,
        max_dynamic_storage_buffers_per_pipeline_layout, max_sampled_textures_per_shader_stage,
        max_samplers_per_shader_stage, max_storage_buffers_per_shader_stage,
        max_storage_textures_per_shader_stage, max_uniform_buffers_per_shader_stage,
        max_binding_array_elements_per_shader_stage,
        max_binding_array_acceleration_structure_elements_per_shader_stage,
        max_binding_array_sampler_elements_per_shader_stage, max_uniform_buffer_binding_size,
        max_storage_buffer_binding_size, max_vertex_buffers, max_buffer_size,
        max_vertex_attributes, max_vertex_buffer_array_stride, max_inter_stage_shader_variables,
        min_uniform_buffer_offset_alignment, min_storage_buffer_offset_alignment,
        max_color_attachments, max_color_attachment_bytes_per_sample,
        max_compute_workgroup_storage_size, max_compute_invocations_per_workgroup,
        max_compute_workgroup_size_x, max_compute_workgroup_size_y, max_compute_workgroup_size_z,
        max_compute_workgroups_per_dimension, max_immediate_size, max_non_sampler_bindings,
        max_task_workgroup_total_count, max_task_workgroups_per_dimension,
        max_mesh_workgroup_total_count, max_mesh_workgroups_per_dimension,
        max_task_invocations_per_workgroup, max_task_invocations_per_dimension,
        max_mesh_invocations_per_workgroup, max_mesh_invocations_per_dimension,
        max_task_payload_size, max_mesh_output_vertices, max_mesh_output_primitives,
        max_mesh_output_layers, max_mesh_multiview_view_count, max_blas_primitive_count,
        max_blas_geometry_count, max_tlas_instance_count,
        max_acceleration_structures_per_shader_stage,
        max_buffers_and_acceleration_structures_per_shader_stage, max_multiview_view_count,
        max_ray_dispatch_count, max_ray_recursion_depth,
    )
}

/// The report of one opened adapter.
pub fn adapter_report(ctx: &GpuContext) -> Value {
    json!({
        "adapter": ctx.info,
        "features": ctx.feature_names(),
        "limits": limits_json(&ctx.limits),
        "fsnn": {
            "pass_timestamps": ctx.has_pass_timestamps(),
            "subgroups": ctx.features.contains(wgpu::Features::SUBGROUP),
            "max_binding_bytes": ctx.max_binding_bytes(),
            "variants": variants_json(ctx),
        },
    })
}

/// The kernel variant each family runs on this adapter, and whether `fsnn tune` measured it.
fn variants_json(ctx: &GpuContext) -> Value {
    let chosen = variants::initial(&ctx.info, &ctx.features);
    let families: Map<String, Value> = Family::ALL
        .iter()
        .map(|&f| (f.name().to_string(), json!(chosen.get(f).name())))
        .collect();
    let per_shape: Map<String, Value> = Family::ALL
        .iter()
        .map(|&f| {
            let shapes: Vec<Value> = chosen
                .shapes(f)
                .iter()
                .map(|c| json!({ "shape": c.shape, "variant": c.variant.name() }))
                .collect();
            (f.name().to_string(), json!(shapes))
        })
        .collect();
    json!({
        "chosen": families,
        "per_shape": per_shape,
        "measured": variants::cached(&ctx.info).is_some(),
        "cache": variants::cache_path(),
    })
}

pub fn run(global: &Global, args: &Args) -> Result<()> {
    if args.all {
        let adapters = list_adapters();
        let cpu = fsnn_cpu::Cpu::new(global.threads);
        let cpu_line = format!(
            "CPU backend  {} (--device cpu; auto picks it when no hardware GPU is listed)",
            fsnn::Backend::describe(&cpu)
        );
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "adapters": adapters,
                    "cpu": { "name": fsnn_cpu::cpu_model(), "threads": cpu.threads() },
                }))?
            );
            return Ok(());
        }
        println!("{cpu_line}");
        if adapters.is_empty() {
            println!("{}", fsnn::gpu::NO_ADAPTER_HELP);
        } else {
            for a in &adapters {
                println!(
                    "{:>3}  {}  ({}, {}, driver {} {})",
                    a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info
                );
            }
            println!("pick one with --adapter NAME|INDEX or FSNN_ADAPTER=NAME|INDEX");
        }
        return Ok(());
    }
    let ctx = GpuContext::new(&global.adapter)?;
    let report = adapter_report(&ctx);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let a = &ctx.info;
    println!("adapter      {} (index {})", a.name, a.index);
    println!("backend      {}", a.backend);
    println!("device type  {}", a.device_type);
    println!("driver       {} {}", a.driver, a.driver_info);
    println!(
        "timestamps   {}",
        if ctx.has_pass_timestamps() {
            "inside compute passes (per-kernel GPU timing)"
        } else {
            "not inside passes (kernel timing falls back to wall clock)"
        }
    );
    println!("features     {}", ctx.feature_names().join(", "));
    let chosen = variants::initial(&ctx.info, &ctx.features);
    println!(
        "variants     {} ({})",
        Family::ALL
            .iter()
            .map(|&f| format!("{f}={}", chosen.get(f)))
            .collect::<Vec<_>>()
            .join(", "),
        if variants::cached(&ctx.info).is_some() {
            "measured by `fsnn tune`"
        } else {
            "defaults: not measured on this adapter, `fsnn tune` measures them"
        }
    );
    println!("limits");
    for (k, v) in limits_json(&ctx.limits) {
        println!("  {k:<68} {v}");
    }
    Ok(())
}
