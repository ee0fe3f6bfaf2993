//! The `fsnn` binary end to end: its JSON reports parse and carry the promised fields.

use std::process::Command;

use serde_json::Value;

fn fsnn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fsnn"))
        .args(args)
        // A stray FSNN_ADAPTER in the caller's environment must not pick another adapter.
        .env_remove("FSNN_ADAPTER")
        .output()
        .expect("cannot run fsnn")
}

/// Runs fsnn, requires success and exactly one JSON object on stdout.
fn json(args: &[&str]) -> Value {
    let out = fsnn(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fsnn {args:?} failed:\n{stderr}");
    let text = String::from_utf8(out.stdout).expect("stdout is not UTF-8");
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fsnn {args:?}: not one JSON value ({e}):\n{text}"));
    assert!(v.is_object(), "fsnn {args:?}: not a JSON object");
    v
}

fn positive(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite() && x > 0.0, "{what} = {x}");
    x
}

#[test]
fn info_json_has_adapter_features_and_limits() {
    let v = json(&["info", "--json"]);
    for key in ["name", "backend", "device_type", "driver"] {
        assert!(v["adapter"][key].is_string(), "adapter.{key} missing: {v}");
    }
    let features = v["features"].as_array().expect("features is a list");
    assert!(features.iter().all(Value::is_string));
    let limits = v["limits"].as_object().expect("limits is an object");
    assert!(limits.len() >= 50, "only {} limits", limits.len());
    positive(
        &limits["max_storage_buffer_binding_size"],
        "max_storage_buffer_binding_size",
    );
    positive(
        &limits["max_compute_workgroups_per_dimension"],
        "max_compute_workgroups_per_dimension",
    );
    println!("adapter {}", v["adapter"]["name"]);
}

#[test]
fn info_for_people_names_the_same_adapter() {
    let name = json(&["info", "--json"])["adapter"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let out = fsnn(&["info"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&name) && text.contains("max_buffer_size"),
        "{text}"
    );
}

#[test]
fn info_all_lists_adapters_and_adapter_flag_selects_by_index() {
    let v = json(&["info", "--all", "--json"]);
    let adapters = v["adapters"].as_array().expect("adapters is a list");
    assert!(!adapters.is_empty());
    let last = adapters.len() - 1;
    let chosen = json(&["--adapter", &last.to_string(), "info", "--json"]);
    assert_eq!(chosen["adapter"]["name"], adapters[last]["name"]);
}

#[test]
fn unknown_adapter_fails_with_a_message() {
    let out = fsnn(&["info", "--adapter", "no-such-adapter-xyz"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-adapter-xyz"), "{err}");
}

#[test]
fn bench_kernels_quick_json() {
    let v = json(&["bench", "kernels", "--json", "--runs", "1", "--quick"]);
    for key in ["adapter", "date", "git_commit", "timing", "peak"] {
        assert!(!v[key].is_null(), "{key} missing");
    }
    let kernels = v["kernels"].as_array().expect("kernels is a list");
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for want in [
        "gemm",
        "conv2d",
        "conv2d_input_grad",
        "conv_transpose2d",
        "neuron_step",
        "fc_event_sim",
        "fc_dense_step",
        "conv_event_sim",
        "conv_dense_step",
    ] {
        assert!(names.contains(&want), "{want} not benchmarked: {names:?}");
    }
    for k in kernels {
        let what = format!("{} {}", k["name"], k["shape"]);
        assert!(k["shape"].as_str().is_some_and(|s| !s.is_empty()), "{what}");
        positive(&k["ms"], &format!("{what} ms"));
        positive(&k["gflops"], &format!("{what} gflops"));
        positive(&k["gbps"], &format!("{what} gbps"));
        let (lo, med, hi) = (
            k["ms_min"].as_f64().unwrap(),
            k["ms"].as_f64().unwrap(),
            k["ms_max"].as_f64().unwrap(),
        );
        assert!(lo <= med && med <= hi, "{what}: {lo} {med} {hi}");
    }
}

#[test]
fn bench_peak_quick_json() {
    let v = json(&["bench", "peak", "--json", "--runs", "1", "--quick"]);
    let p = &v["peak"];
    for key in [
        "fma_gflops",
        "copy_gbps",
        "stream_gbps",
        "dispatch_us",
        "submit_us",
    ] {
        println!("{key} = {}", positive(&p[key], key));
    }
    assert!(v["adapter"]["name"].is_string());
}

#[test]
fn bench_step_json_names_every_kernel_of_the_step() {
    let v = json(&[
        "bench",
        "step",
        "--preset",
        "fc400",
        "--time-steps",
        "2,4",
        "--batch-size",
        "8",
        "--runs",
        "1",
        "--kernels",
        "dense",
        "--json",
    ]);
    assert_eq!(v["kernels"], "dense");
    for key in [
        "peak_gpu_bytes",
        "ms_per_step",
        "forward_ms",
        "backward_ms",
        "samples_per_sec",
    ] {
        positive(&v[key], key);
    }
    let sweep = v["sweep"].as_array().expect("sweep");
    assert_eq!(sweep.len(), 2);
    // Memory does not depend on T.
    assert_eq!(sweep[0]["peak_gpu_bytes"], sweep[1]["peak_gpu_bytes"]);
    let kernels = sweep[0]["profiled_step"]["kernels"]
        .as_array()
        .expect("kernels");
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    for k in kernels {
        positive(&k["total_ms"], &format!("{} total_ms", k["name"]));
        assert!(k["calls"].as_u64().unwrap() > 0);
    }
    for want in [
        "gemm",
        "neuron_step",
        "power_iteration",
        "sn_weight",
        "bn_stats",
        "bn_forward",
        "dropout_mask",
        "softmax_xent",
        "clamp_mask",
        "history_dot",
        "history_combine",
        "broyden_update",
        "row_dot",
        "reduce_sum",
        "sn_weight_grad",
        "bn_backward_reduce",
        "bn_backward_input",
        "channel_sum",
        "sgd",
    ] {
        assert!(
            names.contains(&want),
            "kernel {want} missing from the step profile: {names:?}"
        );
    }
}

#[test]
fn presets_json_lists_every_model_with_counts() {
    let v = json(&["presets", "--json"]);
    let list = v["presets"].as_array().expect("presets");
    let find = |n: &str| {
        list.iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(find("fc400")["params"], 478_811);
    assert_eq!(find("conv64")["params"], 229_643);
    assert_eq!(find("conv64-nmnist")["params"], 290_763);
    assert_eq!(find("alexnet-f")["params"], 3_709_515);
    assert_eq!(find("alexnet-f-100")["params"], 5_184_165);
    assert_eq!(find("cifarnet-f")["params"], 11_840_011);
    assert_eq!(find("cifarnet-f-100")["params"], 14_789_221);
    assert_eq!(find("conv64")["neurons"], 13_328);
    for p in list {
        positive(&p["neurons"], "neurons");
    }
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let tmp = std::env::temp_dir().join(format!("fsnn-cli-bad-{}", std::process::id()));
    let out_dir = tmp.to_str().unwrap();
    for (args, want) in [
        (
            vec!["train", "--preset", "nope", "--out", out_dir],
            "unknown preset \"nope\"",
        ),
        (
            vec![
                "train",
                "--dataset",
                "imagenet",
                "--data-dir",
                out_dir,
                "--out",
                out_dir,
            ],
            "imagenet",
        ),
        (
            vec!["train", "--neuron", "hh", "--out", out_dir],
            "unknown neuron",
        ),
        (
            vec!["train", "--time-steps", "0", "--out", out_dir],
            "--time-steps must be at least 1",
        ),
        (
            vec!["eval", "--checkpoint", "/nonexistent/ckpt.safetensors"],
            "/nonexistent/ckpt.safetensors",
        ),
    ] {
        let out = fsnn(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("fsnn {args:?}: {}", stderr.trim());
        assert!(!out.status.success(), "fsnn {args:?} succeeded");
        assert!(
            stderr.contains(want),
            "fsnn {args:?}: expected {want:?} in:\n{stderr}"
        );
    }
}

/// `--kernels auto` times both simulations once, stores the choice under FSNN_CACHE_DIR keyed by
/// adapter, driver and shape, and the next run reuses it without measuring.
#[test]
fn bench_step_kernels_auto_measures_once_and_caches() {
    let dir = std::env::temp_dir().join(format!("fsnn-kernels-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_fsnn"))
            .args([
                "bench",
                "step",
                "--preset",
                "fc400",
                "--time-steps",
                "2",
                "--batch-size",
                "8",
                "--runs",
                "1",
                "--kernels",
                "auto",
                "--json",
            ])
            .env_remove("FSNN_ADAPTER")
            .env("FSNN_CACHE_DIR", &dir)
            .output()
            .expect("cannot run fsnn");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "fsnn failed:\n{stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, stderr)
    };
    let (v1, err1) = run();
    assert!(
        err1.contains("kernels auto: dense"),
        "no measurement: {err1}"
    );
    let cache: Value =
        serde_json::from_slice(&std::fs::read(dir.join("kernels.json")).unwrap()).unwrap();
    let entries = cache.as_object().expect("cache is an object");
    assert_eq!(entries.len(), 1, "{cache}");
    let (key, choice) = entries.iter().next().unwrap();
    assert!(key.contains("batch=8") && key.contains("T=2"), "{key}");
    positive(&choice["dense_ms"], "dense_ms");
    positive(&choice["event_ms"], "event_ms");
    assert_eq!(v1["kernels"], choice["kernels"]);
    let (v2, err2) = run();
    assert!(!err2.contains("kernels auto:"), "measured again: {err2}");
    assert_eq!(v2["kernels"], choice["kernels"]);
    let _ = std::fs::remove_dir_all(&dir);
}
