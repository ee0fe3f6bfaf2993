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
        "--json",
    ]);
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
        "solver_dots",
        "solver_track",
        "solver_combine",
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

/// Writes a tiny MNIST-format dataset (n training images of 28×28, n test images) into `dir`.
fn write_idx(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (images, labels) in [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        let mut img = vec![0, 0, 8, 3];
        img.extend((n as u32).to_be_bytes());
        img.extend(28u32.to_be_bytes());
        img.extend(28u32.to_be_bytes());
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        for k in 0..n {
            lab.push((k % 10) as u8);
            img.extend((0..784).map(|p| ((p * 7 + k * 13) % 256) as u8));
        }
        std::fs::write(dir.join(images), img).unwrap();
        std::fs::write(dir.join(labels), lab).unwrap();
    }
}

#[test]
fn bench_step_on_real_batches_of_a_dataset() {
    let dir = std::env::temp_dir().join(format!("fsnn-cli-bench-data-{}", std::process::id()));
    write_idx(&dir, 24);
    let d = dir.to_str().unwrap();
    for solver in ["broyden", "anderson", "fixed-point"] {
        let v = json(&[
            "bench",
            "step",
            "--preset",
            "fc400",
            "--dataset",
            "mnist",
            "--data-dir",
            d,
            "--batch-size",
            "8",
            "--runs",
            "1",
            "--solver",
            solver,
            "--time-steps",
            "2",
            "--json",
        ]);
        assert_eq!(v["dataset"], "mnist");
        positive(&v["ms_per_step"], "ms_per_step");
        positive(&v["solver_iters"], "solver_iters");
        let res = v["solver_rel_residual_median"].as_f64().unwrap();
        println!(
            "{solver}: {} iterations, residual {res:.2e}",
            v["solver_iters"]
        );
        assert!(res < 1.0, "{solver}: residual {res}");
    }
    let out = fsnn(&[
        "bench",
        "step",
        "--preset",
        "fc400",
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--batch-size",
        "64",
        "--runs",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--batch-size 64"), "{stderr}");
    let out = fsnn(&[
        "bench",
        "step",
        "--preset",
        "conv64",
        "--dataset",
        "cifar10",
        "--data-dir",
        d,
        "--runs",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", stderr.trim());
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
