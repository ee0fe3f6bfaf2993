//! The `fsnn` binary end to end: its JSON reports parse and carry the promised fields.

use std::process::Command;

use serde_json::Value;

/// The binary, on the GPU adapter (lavapipe here) unless a test says otherwise: these tests cover
/// the WGSL path; `--device auto` would pick the CPU backend on a machine without a GPU.
fn fsnn_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fsnn"));
    c.env("FSNN_DEVICE", "gpu");
    c
}

fn fsnn(args: &[&str]) -> std::process::Output {
    fsnn_command()
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
        "fc_event_sim[bits]",
        "fc_event_sim[list]",
        "fc_dense_step",
        "conv_event_sim[plain]",
        "conv_event_sim[lanes]",
        "conv_dense_step",
        "conv_weight_flip",
    ] {
        assert!(names.contains(&want), "{want} not benchmarked: {names:?}");
    }
    for k in kernels {
        let what = format!("{} {}", k["name"], k["shape"]);
        assert!(k["shape"].as_str().is_some_and(|s| !s.is_empty()), "{what}");
        positive(&k["ms"], &format!("{what} ms"));
        // A copy (conv_weight_flip) does no arithmetic: bandwidth is its only measure.
        if k["flops"].as_f64() == Some(0.0) {
            assert_eq!(k["gflops"].as_f64(), Some(0.0), "{what}");
        } else {
            positive(&k["gflops"], &format!("{what} gflops"));
        }
        positive(&k["gbps"], &format!("{what} gbps"));
        let (lo, med, hi) = (
            k["ms_min"].as_f64().unwrap(),
            k["ms"].as_f64().unwrap(),
            k["ms_max"].as_f64().unwrap(),
        );
        assert!(lo <= med && med <= hi, "{what}: {lo} {med} {hi}");
    }
}

/// `fsnn tune` times every variant of every family and names the choice; `FSNN_VARIANT_*` forces
/// one over the measurement (and a name that is no variant fails).
#[test]
fn tune_quick_measures_every_family_and_env_forces_a_variant() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: Option<(&str, &str)>| {
        let mut cmd = fsnn_command();
        cmd.args(["tune", "--quick", "--no-peak"])
            .env_remove("FSNN_ADAPTER")
            .env("FSNN_CACHE_DIR", dir.path());
        for f in ["GEMM", "CONV2D", "CONV2D_INPUT_GRAD", "CONV2D_WEIGHT_GRAD"] {
            cmd.env_remove(format!("FSNN_VARIANT_{f}"));
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().expect("cannot run fsnn")
    };
    let out = run(None);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for family in ["gemm", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"] {
        for variant in ["blocked", "tiled"] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("{family} "))
                        && l.contains(&format!(" {variant} "))),
                "no {family} {variant} row:\n{text}"
            );
        }
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{family}: "))),
            "no {family} choice:\n{text}"
        );
    }
    // The input gradient's forward-kernel form is a candidate on every adapter.
    assert!(
        text.lines()
            .any(|l| l.starts_with("conv2d_input_grad ") && l.contains(" flipped ")),
        "no conv2d_input_grad flipped row:\n{text}"
    );
    assert!(text.contains("variants not cached (--quick)"), "{text}");
    assert!(!dir.path().join("variants.json").exists());
    let out = run(Some(("FSNN_VARIANT_CONV2D", "tiled")));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("conv2d: ")
            && l.ends_with("-> tiled (forced by FSNN_VARIANT_CONV2D=tiled)")),
        "{text}"
    );
    let out = run(Some(("FSNN_VARIANT_GEMM", "fastest")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FSNN_VARIANT_GEMM") && err.contains("fastest"),
        "{err}"
    );
}

/// The families whose `coop` kernel is the default on CPU adapters with subgroups
/// (`fsnn::variants::initial`).
const COOP_DEFAULT_FAMILIES: &[&str] =
    &["gemm", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"];

/// A measured choice in the cache (as `fsnn tune` writes it, under the adapter's key) is what a
/// new device runs, `fsnn info` shows it, and `FSNN_VARIANT_*` overrides it.
#[test]
fn cached_variant_choice_is_used_and_env_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let info = |env: &[(&str, &str)]| -> Value {
        let mut cmd = fsnn_command();
        cmd.args(["info", "--json"])
            .env_remove("FSNN_ADAPTER")
            .env("FSNN_CACHE_DIR", dir.path());
        for f in ["GEMM", "CONV2D", "CONV2D_INPUT_GRAD", "CONV2D_WEIGHT_GRAD"] {
            cmd.env_remove(format!("FSNN_VARIANT_{f}"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("cannot run fsnn");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let before = info(&[]);
    let v = &before["fsnn"]["variants"];
    assert_eq!(v["measured"], false, "{v}");
    // CPU drivers with subgroups default to the coop kernels of the families that have them;
    // everything else to blocked.
    let coop_default =
        before["adapter"]["device_type"] == "Cpu" && before["fsnn"]["subgroups"] == true;
    let default_of = |f: &str| {
        if coop_default && COOP_DEFAULT_FAMILIES.contains(&f) {
            "coop"
        } else {
            "blocked"
        }
    };
    for f in ["gemm", "conv2d", "conv2d_input_grad", "conv2d_weight_grad"] {
        assert_eq!(v["chosen"][f], default_of(f), "default of {f}: {v}");
    }
    // The key fsnn::variants::cache_key builds from the adapter.
    let a = &before["adapter"];
    let key = format!(
        "{} | {} | {} {} | variants v3",
        a["name"].as_str().unwrap(),
        a["backend"].as_str().unwrap(),
        a["driver"].as_str().unwrap(),
        a["driver_info"].as_str().unwrap()
    );
    let choice = |v: &str| serde_json::json!({ "chosen": v, "timings": [] });
    // conv2d as `fsnn tune` now writes it, with the winner of each measured shape; the weight
    // gradient as older caches have it, without.
    let mut conv2d = choice("tiled");
    conv2d["per_shape"] = serde_json::json!([
        { "shape": "b16 64->64 14x14 k5 s1", "class": "s1", "flops": 1.0e9, "variant": "tiled" },
        { "shape": "b16 256->384 16x16 k3 s2", "class": "s2", "flops": 2.0e9, "variant": "blocked" },
    ]);
    let cache = serde_json::json!({
        key: { "conv2d": conv2d, "conv2d_weight_grad": choice("tiled") },
        "another adapter | Vulkan | x y | variants v2": { "gemm": choice("tiled") },
    });
    std::fs::write(dir.path().join("variants.json"), cache.to_string()).unwrap();
    let after = info(&[]);
    let v = &after["fsnn"]["variants"];
    assert_eq!(v["measured"], true, "{v}");
    assert_eq!(v["chosen"]["conv2d"], "tiled", "{v}");
    assert_eq!(v["chosen"]["conv2d_weight_grad"], "tiled", "{v}");
    let shapes = v["per_shape"]["conv2d"].as_array().expect("per_shape");
    assert_eq!(shapes.len(), 2, "{v}");
    assert_eq!(shapes[1]["variant"], "blocked", "{v}");
    assert_eq!(
        v["per_shape"]["conv2d_weight_grad"],
        serde_json::json!([]),
        "{v}"
    );
    // Families the cache does not name keep their defaults.
    assert_eq!(v["chosen"]["gemm"], default_of("gemm"), "{v}");
    assert_eq!(
        v["chosen"]["conv2d_input_grad"],
        default_of("conv2d_input_grad"),
        "{v}"
    );
    let forced = info(&[
        ("FSNN_VARIANT_CONV2D", "blocked"),
        ("FSNN_VARIANT_GEMM", "tiled"),
    ]);
    let v = &forced["fsnn"]["variants"];
    assert_eq!(v["chosen"]["conv2d"], "blocked", "{v}");
    // Forcing a family overrides its per-shape choices too.
    assert_eq!(v["per_shape"]["conv2d"], serde_json::json!([]), "{v}");
    assert_eq!(v["chosen"]["gemm"], "tiled", "{v}");
    assert_eq!(v["chosen"]["conv2d_weight_grad"], "tiled", "{v}");
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
        // The kernel itself or one of its variants (gemm_coop, solver_dots_coop, …).
        let variant = format!("{want}_");
        assert!(
            names.iter().any(|n| *n == want || n.starts_with(&variant)),
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
fn presets_table_has_a_header_and_the_default_dataset() {
    let out = fsnn(&["presets"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["preset", "dataset", "params", "neurons", "model"]);
    let fc: Vec<&str> = lines
        .find(|l| l.starts_with("fc400 "))
        .expect("fc400 row")
        .split_whitespace()
        .collect();
    assert_eq!(fc[..4], ["fc400", "fashion-mnist", "478811", "1184"]);
    assert!(
        text.contains("models/<preset>.toml") && text.contains("--model FILE"),
        "{text}"
    );
    // --show prints the preset's model file, which parses back to the preset.
    let out = fsnn(&["presets", "--show", "alexnet-f"]);
    assert!(out.status.success());
    let file = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        fsnn::model::spec::NetworkSpec::from_toml(&file).unwrap(),
        fsnn::model::spec::preset("alexnet-f").unwrap()
    );
}

/// A model file of its own: bad ones fail with one message naming the file and the problem; a
/// good one trains; `eval`, `--resume` and `inspect` need no model flags (the checkpoint holds
/// the description).
#[test]
fn model_files_train_and_checkpoints_carry_them() {
    let tmp = tmpdir("modelfile");
    let t = tmp.path();
    let data = t.join("data");
    write_idx(&data, 48, 28, 32, 28);
    let d = data.to_str().unwrap();
    let good = "name = \"fc24\"\nclasses = 10\n[input]\nshape = [784]\n[neuron]\ntime_steps = 2\n\
                vth = 2.0\nleak = 0.95\ndropout = 0.2\n[[layers]]\n\
                ops = [{ kind = \"linear\", out = 24 }, { kind = \"batchnorm\" }]\n\
                [feedback]\nkind = \"linear\"\n[train]\ndataset = \"mnist\"\nschedule = [30]\n";
    let file = t.join("fc24.toml");
    std::fs::write(&file, good).unwrap();
    let bad = t.join("bad.toml");
    std::fs::write(
        &bad,
        good.replace(
            "{ kind = \"batchnorm\" }",
            "{ kind = \"conv\", out = 4, k = 3 }",
        ),
    )
    .unwrap();
    let out = t.join("run");
    let o = out.to_str().unwrap();
    let err = fails_with(
        &["train", "--model", bad.to_str().unwrap(), "--out", o],
        "layer 1, op 2 (conv)",
    );
    assert!(err.contains("bad.toml") && err.contains("[24]"), "{err}");
    fails_with(
        &["train", "--model", "/nonexistent/m.toml", "--out", o],
        "/nonexistent/m.toml",
    );
    let huge = t.join("huge.toml");
    std::fs::write(&huge, good.replace("out = 24", "out = 4000000")).unwrap();
    let err = fails_with(
        &["train", "--model", huge.to_str().unwrap(), "--out", o],
        "parameters; at most 268435456 are supported",
    );
    assert!(err.contains("huge.toml"), "{err}");
    fails_with(
        &[
            "train",
            "--model",
            file.to_str().unwrap(),
            "--preset",
            "fc400",
        ],
        "cannot be used with",
    );
    let train = |epochs: &str, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data-dir",
            d,
            "--out",
            o,
            "--epochs",
            epochs,
            "--batch-size",
            "16",
            "--eval-batch",
            "16",
            "--quiet",
        ];
        args.extend(extra);
        ok(&args, t, &[])
    };
    let log = train("1", &["--model", file.to_str().unwrap()]);
    assert!(log.contains("fc24: 19715 parameters"), "{log}");
    // Resume: the model, dataset and schedule come from the checkpoint.
    let log = train("2", &["--resume"]);
    assert!(log.contains("resuming") && log.contains("fc24"), "{log}");
    assert_eq!(metrics_values(&out).len(), 2);
    // ... and a different model is refused naming what differs.
    let err = fails_with(
        &[
            "train",
            "--data-dir",
            d,
            "--out",
            o,
            "--epochs",
            "3",
            "--batch-size",
            "16",
            "--eval-batch",
            "16",
            "--quiet",
            "--resume",
            "--time-steps",
            "3",
        ],
        "checkpoint is of another model",
    );
    assert!(err.contains("neuron.time_steps 2 → 3"), "{err}");
    let ck = out.join("last.safetensors");
    let ck = ck.to_str().unwrap();
    let v = json(&["eval", "--checkpoint", ck, "--data-dir", d, "--json"]);
    assert_eq!(
        (v["model"].as_str(), v["dataset"].as_str()),
        (Some("fc24"), Some("mnist"))
    );
    assert_eq!(v["samples"], 32);

    // inspect: text, JSON and plots.
    let plots = t.join("plots");
    let out = fsnn_env(
        &[
            "inspect",
            "--checkpoint",
            ck,
            "--data-dir",
            d,
            "--batch",
            "16",
            "--time-steps",
            "3,8",
        ],
        t,
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("fc24 (T=2)") && text.contains("[24]") && text.contains("T=8"),
        "{text}"
    );
    let v = json(&[
        "inspect",
        "--checkpoint",
        ck,
        "--data-dir",
        d,
        "--batch",
        "16",
        "--samples",
        "3",
        "--time-steps",
        "3,8",
        "--json",
        "--plot",
        plots.to_str().unwrap(),
    ]);
    let layers = v["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    let l = &layers[0];
    assert_eq!(
        (l["layer"].as_u64(), l["neurons"].as_u64()),
        (Some(1), Some(24))
    );
    for k in [
        "mean_rate",
        "silent",
        "saturated",
        "always_silent",
        "always_saturated",
    ] {
        let x = l[k].as_f64().unwrap_or_else(|| panic!("{k}: {l}"));
        assert!((0.0..=1.0).contains(&x), "{k} = {x}");
    }
    let ts: Vec<u64> = v["residuals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["time_steps"].as_u64().unwrap())
        .collect();
    assert_eq!(ts, [2, 3, 8]);
    assert!(plots.join("layer1_rates.png").exists());
    let rates = image::open(plots.join("layer1_rates.png")).unwrap();
    assert!(rates.width() > 100 && rates.height() > 100);
    assert_eq!(v["recorded_samples"], 3, "{v}");
    assert!(v.get("note").is_none(), "{v}");
    // Residuals fall as T grows (the rate approaches the fixed point).
    let res: Vec<f64> = v["residuals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["residual"].as_f64().unwrap_or_else(|| panic!("{r}")))
        .collect();
    assert!(res.iter().all(|x| x.is_finite() && *x >= 0.0), "{res:?}");
    assert!(res[2] < res[0], "{res:?}");
    // The raster: 3 sample panels of 2 steps × 24 neurons, with spikes drawn.
    let raster = image::open(plots.join("layer1_raster.png"))
        .unwrap()
        .to_rgb8();
    let spikes = raster
        .pixels()
        .filter(|p| **p == image::Rgb([20, 30, 120]))
        .count();
    assert!(spikes > 0, "no spikes drawn");
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

// ------------------------------------------------ validation, run folders, kill and resume

use std::path::{Path, PathBuf};

/// fsnn with extra environment, in `cwd`.
fn fsnn_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = fsnn_command();
    c.args(args).current_dir(cwd).env_remove("FSNN_ADAPTER");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("cannot run fsnn")
}

/// Runs fsnn, requires failure with `want` in its one-line error.
fn fails_with(args: &[&str], want: &str) -> String {
    let out = fsnn(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    println!("fsnn {args:?}: {}", stderr.lines().last().unwrap_or(""));
    assert!(!out.status.success(), "fsnn {args:?} succeeded:\n{stderr}");
    assert!(
        !stderr.contains("panicked"),
        "fsnn {args:?} panicked:\n{stderr}"
    );
    assert!(
        stderr.contains(want),
        "fsnn {args:?}: expected {want:?} in:\n{stderr}"
    );
    stderr
}

/// A small random IDX dataset (train `n_train` images of `side_train`², test `n_test` of
/// `side_test`²) in `dir`.
fn write_idx(dir: &Path, n_train: usize, side_train: u32, n_test: usize, side_test: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x1234_5678u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (prefix, n, side) in [("train", n_train, side_train), ("t10k", n_test, side_test)] {
        let mut img = vec![0, 0, 8, 3];
        img.extend((n as u32).to_be_bytes());
        img.extend(side.to_be_bytes());
        img.extend(side.to_be_bytes());
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        for _ in 0..n {
            let c = (next() % 4) as u8;
            lab.push(c);
            for y in 0..side {
                for x in 0..side {
                    let q = (y * 2 / side) * 2 + x * 2 / side;
                    let v = if q == c as u32 { 180 } else { 20 } + (next() % 60) as u32;
                    img.push(v as u8);
                }
            }
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    }
}

fn tmpdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("fsnn-cli-{tag}-"))
        .tempdir()
        .unwrap()
}

#[test]
fn out_of_range_flags_are_refused_before_anything_runs() {
    let tmp = tmpdir("flags");
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    for (flags, want) in [
        (
            vec!["--batch-size", "0"],
            "--batch-size must be at least 1, got 0",
        ),
        (
            vec!["--eval-batch", "0"],
            "--eval-batch must be at least 1, got 0",
        ),
        (vec!["--lr=-1"], "--lr must be a finite number > 0, got -1"),
        (vec!["--lr", "0"], "--lr must be a finite number > 0"),
        (
            vec!["--lr", "nan"],
            "--lr must be a finite number > 0, got NaN",
        ),
        (
            vec!["--lr", "inf"],
            "--lr must be a finite number > 0, got inf",
        ),
        (
            vec!["--vth", "0"],
            "--vth must be a finite number > 0, got 0",
        ),
        (
            vec!["--vth=-1"],
            "--vth must be a finite number > 0, got -1",
        ),
        (
            vec!["--vth", "nan"],
            "--vth must be a finite number > 0, got NaN",
        ),
        (vec!["--leak", "0"], "--leak must be in (0, 1], got 0"),
        (vec!["--leak", "1.5"], "--leak must be in (0, 1], got 1.5"),
        (vec!["--leak", "nan"], "--leak must be in (0, 1]"),
        (vec!["--dropout", "1"], "--dropout must be in [0, 1), got 1"),
        (
            vec!["--threshold", "0"],
            "--threshold must be at least 1, got 0",
        ),
        (
            vec!["--limit-train", "0"],
            "--limit-train must be at least 1, got 0",
        ),
        (
            vec!["--limit-test", "0"],
            "--limit-test must be at least 1, got 0",
        ),
        (vec!["--epochs", "0"], "--epochs must be at least 1, got 0"),
        (
            vec!["--time-steps", "1000000000"],
            "--time-steps must be in 1..=10000, got 1000000000",
        ),
        (
            vec!["--resize", "0x8"],
            "--resize must be WxH with both in 1..=16384, got 0x8",
        ),
        (vec!["--resize", "big"], "expected WxH"),
        (
            vec!["--warmup", "1000000000000"],
            "--warmup must be at most 100000000 iterations",
        ),
        (vec!["--schedule", "0"], "milestones must be at least 1"),
        (
            vec!["--schedule", "3,3"],
            "--schedule must be strictly increasing epochs, got 3 then 3",
        ),
    ] {
        let mut args = vec!["train", "--out", o];
        args.extend(flags);
        fails_with(&args, want);
    }
    assert!(!out.exists(), "a refused run created its folder");
    fails_with(&["train", "--resume"], "--resume needs --out");
    fails_with(
        &["bench", "step", "--batch-size", "0", "--runs", "1"],
        "--batch-size must be at least 1, got 0",
    );
    fails_with(
        &["bench", "step", "--threshold", "0", "--runs", "1"],
        "--threshold must be at least 1, got 0",
    );
    fails_with(
        &["bench", "step", "--time-steps", "0", "--runs", "1"],
        "--time-steps must be in 1..=10000, got 0",
    );
    fails_with(
        &["eval", "--checkpoint", "x.safetensors", "--eval-batch", "0"],
        "--eval-batch must be at least 1",
    );
    fails_with(
        &["eval", "--checkpoint", "x.safetensors", "--limit-test", "0"],
        "--limit-test must be at least 1",
    );
}

/// A checkpoint whose metadata claims `model` (no tensors: validation comes first).
fn checkpoint_claiming(path: &Path, model: &serde_json::Value) {
    let mut meta = std::collections::HashMap::new();
    meta.insert("fsnn.model".to_string(), model.to_string());
    let views: Vec<(String, safetensors::tensor::TensorView)> = Vec::new();
    std::fs::write(path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
}

#[test]
fn checkpoints_claiming_bad_sizes_or_values_are_clear_errors() {
    let tmp = tmpdir("ckpt");
    let data = tmp.path().join("data");
    write_idx(&data, 8, 28, 8, 20);
    let preset =
        |name: &str| serde_json::to_value(fsnn::model::spec::preset(name).unwrap()).unwrap();
    let fc = preset("fc400");
    let conv = preset("conv64");
    let multi = preset("alexnet-f");
    // `at` is a JSON pointer (/layers/0/ops/0/out).
    let set = |base: &serde_json::Value, at: &str, v: serde_json::Value| {
        let mut m = base.clone();
        *m.pointer_mut(at).unwrap_or_else(|| panic!("{at}")) = v;
        m
    };
    // What checkpoints held before model files: converted on reading, checked the same way.
    let legacy_fc: serde_json::Value = serde_json::from_str(
        r#"{"kind":"Single","preset":"fc400","arch":{"Fc":{"input":784,"hidden":400}},"classes":10,"time_steps":5,"vth":2.0,"leak":0.95,"dropout":0.2,"time_varying":false}"#,
    )
    .unwrap();
    let cases = [
        (
            set(&fc, "/neuron/time_steps", 0.into()),
            "time_steps must be in 1..=10000, got 0",
        ),
        (
            set(&fc, "/neuron/time_steps", 1_000_000_000u64.into()),
            "time_steps must be in 1..=10000, got 1000000000",
        ),
        (
            set(&fc, "/neuron/vth", (-1.0).into()),
            "vth must be a finite number > 0, got -1",
        ),
        (
            set(&fc, "/neuron/leak", 0.0.into()),
            "leak must be in (0, 1], got 0",
        ),
        (
            set(&fc, "/layers/0/ops/0/out", (1u64 << 40).into()),
            "layer 1, op 1 (linear) out must be in 1..=16777216",
        ),
        (
            set(&fc, "/layers/0/ops/0/out", 1_000_000u64.into()),
            "parameters; at most 268435456 are supported",
        ),
        (
            set(&conv, "/layers/0/ops/0/stride", 0.into()),
            "stride must be in 1..=256, got 0",
        ),
        (
            set(&conv, "/layers/0/ops/0/k", 99.into()),
            "kernel 99 is larger than the padded 28×28 input",
        ),
        (
            set(&conv, "/feedback/k", 4.into()),
            "feedback: maps the last spiking layer [64, 14, 14] to [64, 15, 15]",
        ),
        (
            set(&multi, "/layers", serde_json::json!([])),
            "layers must be in 1..=64, got 0",
        ),
        (
            set(&multi, "/feedback/stride", 1.into()),
            "feedback (conv_transpose): output_pad = 1 must be less than stride = 1",
        ),
        (
            set(&multi, "/feedback/output_pad", 0.into()),
            "feedback: maps the last spiking layer [256, 8, 8] to [96, 15, 15]",
        ),
        (
            {
                let mut m = fc.clone();
                m["colour"] = "red".into();
                m
            },
            "bad model metadata",
        ),
        (
            serde_json::json!({"kind": "Single", "preset": 3}),
            "bad model metadata",
        ),
        (
            set(&legacy_fc, "/time_steps", 0.into()),
            "time_steps must be in 1..=10000, got 0",
        ),
        (
            set(&legacy_fc, "/arch/Fc/hidden", (1u64 << 40).into()),
            "out must be in 1..=16777216",
        ),
    ];
    for (i, (model, want)) in cases.iter().enumerate() {
        let ck = tmp.path().join(format!("bad{i}.safetensors"));
        checkpoint_claiming(&ck, model);
        let err = fails_with(
            &[
                "eval",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--dataset",
                "mnist",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            want,
        );
        assert!(err.contains(&format!("bad{i}.safetensors")), "{err}");
    }
    // A well-formed checkpoint (of today's format, and of the one before model files) on a
    // dataset of another shape: one message naming both.
    let data20 = tmp.path().join("data20");
    write_idx(&data20, 8, 20, 8, 20);
    for (name, model) in [("fc400", &fc), ("legacy", &legacy_fc)] {
        let ck = tmp.path().join(format!("{name}.safetensors"));
        checkpoint_claiming(&ck, model);
        fails_with(
            &[
                "eval",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--dataset",
                "mnist",
                "--data-dir",
                data20.to_str().unwrap(),
            ],
            "model fc400 takes 784 values per sample and 10 classes; dataset mnist gives 400 values",
        );
    }
}

#[test]
fn datasets_are_checked_before_training() {
    let tmp = tmpdir("data");
    let t = tmp.path();
    // IDX: the test file's image size differs from the training file's.
    let data = t.join("idx");
    write_idx(&data, 16, 28, 8, 20);
    let out = t.join("run");
    let err = fails_with(
        &[
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--time-steps",
            "1",
        ],
        "test images are 20×20 but the training images in",
    );
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("train-images-idx3-ubyte"),
        "{err}"
    );
    assert!(
        !out.join("steps.jsonl").exists(),
        "trained before the check"
    );

    // Image folders: a test image of another size is refused like a training one.
    let root = t.join("imgs");
    for (split, side) in [("train", 8), ("test", 6)] {
        for class in ["a", "b"] {
            let d = root.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            image::RgbImage::from_pixel(side, side, image::Rgb([9, 99, 199]))
                .save(d.join("0.png"))
                .unwrap();
        }
    }
    let ds = format!("folder:{}", root.display());
    fails_with(
        &[
            "train",
            "--preset",
            "alexnet-f",
            "--dataset",
            &ds,
            "--out",
            out.to_str().unwrap(),
        ],
        "test images are 6×6 but training images",
    );
    fails_with(
        &[
            "train",
            "--preset",
            "alexnet-f",
            "--dataset",
            &ds,
            "--out",
            out.to_str().unwrap(),
        ],
        "--resize WxH",
    );
    // --resize makes both splits one size; AlexNet-F then names its own input size.
    fails_with(
        &[
            "train",
            "--preset",
            "alexnet-f",
            "--dataset",
            &ds,
            "--resize",
            "16x16",
            "--out",
            out.to_str().unwrap(),
        ],
        "gives 768 values per sample",
    );
    // The same odd size in the training split is the same kind of error.
    image::RgbImage::from_pixel(5, 5, image::Rgb([1, 2, 3]))
        .save(root.join("train/b/1.png"))
        .unwrap();
    fails_with(
        &[
            "train",
            "--preset",
            "alexnet-f",
            "--dataset",
            &ds,
            "--out",
            out.to_str().unwrap(),
        ],
        "resize all images to one size",
    );
    // A damaged JPEG is an error naming the file.
    std::fs::remove_file(root.join("train/b/1.png")).unwrap();
    let jpg = root.join("train/a/1.jpg");
    image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 7]))
        .save(&jpg)
        .unwrap();
    let bytes = std::fs::read(&jpg).unwrap();
    std::fs::write(&jpg, &bytes[..bytes.len() * 2 / 3]).unwrap();
    fails_with(
        &[
            "train",
            "--preset",
            "alexnet-f",
            "--dataset",
            &ds,
            "--out",
            out.to_str().unwrap(),
        ],
        "1.jpg: cannot decode: damaged or truncated JPEG",
    );
}

fn tiny_train<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data,
        "--out",
        out,
        "--epochs",
        epochs,
        "--time-steps",
        "2",
        "--batch-size",
        "16",
        // Two evaluation batches of the 16 test samples: a stop can fall between them.
        "--eval-batch",
        "8",
        "--checkpoint-every",
        "2",
        "--seed",
        "5",
        "--quiet",
    ]
}

fn ok(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> String {
    let out = fsnn_env(args, cwd, env);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "fsnn {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn run_folders_are_never_silently_replaced() {
    let tmp = tmpdir("folders");
    let t = tmp.path();
    let data = t.join("data");
    write_idx(&data, 32, 28, 16, 28);
    let d = data.to_str().unwrap();
    // Without --out: a new folder per run, named by the start time.
    let mut args = tiny_train(d, "", "1");
    args.drain(5..7);
    ok(&args, t, &[]);
    ok(&args, t, &[]);
    let runs: Vec<PathBuf> = std::fs::read_dir(t.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for r in &runs {
        assert!(r.join("metrics.jsonl").exists() && r.join("last.safetensors").exists());
        let name = r.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("20") && name.contains('-'), "{name}");
    }
    // eval --limit-test evaluates on the first N test samples.
    let v = json(&[
        "eval",
        "--checkpoint",
        runs[0].join("last.safetensors").to_str().unwrap(),
        "--dataset",
        "mnist",
        "--data-dir",
        d,
        "--limit-test",
        "5",
        "--json",
    ]);
    assert_eq!(v["samples"], 5, "{v}");
    let acc = v["test_acc"].as_f64().unwrap();
    assert!(
        (acc * 5.0 - (acc * 5.0).round()).abs() < 1e-9,
        "accuracy {acc} is not k/5"
    );
    // Into a folder holding a run: refused, untouched.
    let out = runs[0].to_str().unwrap();
    let before = std::fs::read(runs[0].join("metrics.jsonl")).unwrap();
    let err = fails_with(&tiny_train(d, out, "1"), "already holds a run");
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    fails_with(&tiny_train(d, out, "0"), "--epochs must be at least 1");
    assert_eq!(
        std::fs::read(runs[0].join("metrics.jsonl")).unwrap(),
        before
    );
    // --resume with changed training flags: refused naming them; --force continues.
    let mut changed = tiny_train(d, out, "2");
    let b = changed.iter().position(|&a| a == "--batch-size").unwrap();
    changed[b + 1] = "8";
    changed.extend(["--resume", "--lr", "0.1"]);
    let err = fails_with(&changed, "settings differ from the checkpoint's");
    assert!(
        err.contains("--lr 0.05 → 0.1") && err.contains("--batch-size 16 → 8"),
        "{err}"
    );
    changed.push("--force");
    ok(&changed, t, &[]);
    assert_eq!(
        std::fs::read_to_string(runs[0].join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    // --force without --resume replaces the run.
    let mut replace = tiny_train(d, out, "1");
    replace.push("--force");
    ok(&replace, t, &[]);
    assert_eq!(
        std::fs::read_to_string(runs[0].join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        1
    );
    // Nothing to resume in an empty folder.
    let empty = t.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut resume = tiny_train(d, empty.to_str().unwrap(), "1");
    resume.push("--resume");
    fails_with(&resume, "nothing to resume");
}

/// Metrics without the fields that measure time.
fn metrics_values(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for k in [
                "seconds",
                "samples_per_sec",
                "forward_ms_mean",
                "backward_ms_mean",
                "peak_gpu_bytes",
            ] {
                o.remove(k);
            }
            v
        })
        .collect()
}

/// (step, loss, acc) of every line of steps.jsonl.
fn steps_values(dir: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(dir.join("steps.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["acc"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every tensor of a checkpoint, by name, as raw bytes.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.data().to_vec()))
        .collect();
    v.sort();
    v
}

/// The fields of metrics.jsonl that measure wall-clock time (and so differ between any two
/// runs): everything else must match byte for byte.
const CLOCK_FIELDS: &[&str] = &[
    "seconds",
    "samples_per_sec",
    "forward_ms_mean",
    "backward_ms_mean",
];

/// The text of the number after `"key":` in a JSON line.
fn number_text<'a>(line: &'a str, key: &str) -> &'a str {
    let key = format!("\"{key}\":");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    let len = line[start..].find([',', '}']).unwrap();
    &line[start..start + len]
}

/// metrics.jsonl as written, with the values of [`CLOCK_FIELDS`] replaced by `_`.
fn metrics_text(dir: &Path) -> String {
    let mut text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    for k in CLOCK_FIELDS {
        let key = format!("\"{k}\":");
        let mut from = 0;
        while let Some(i) = text[from..].find(&key) {
            let start = from + i + key.len();
            let len = text[start..].find([',', '}']).unwrap();
            text.replace_range(start..start + len, "_");
            from = start;
        }
    }
    text
}

fn same_run(reference: &Path, other: &Path, what: &str) {
    assert_eq!(
        metrics_text(reference),
        metrics_text(other),
        "{what}: metrics.jsonl differs"
    );
    assert_eq!(
        metrics_values(reference),
        metrics_values(other),
        "{what}: metrics differ"
    );
    assert_eq!(
        steps_values(reference),
        steps_values(other),
        "{what}: steps.jsonl differs"
    );
    assert!(
        tensors(&reference.join("last.safetensors")) == tensors(&other.join("last.safetensors")),
        "{what}: final weights differ"
    );
    let litter: Vec<_> = std::fs::read_dir(other)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.starts_with('.') && name != ".lock"
        })
        .collect();
    assert!(
        litter.is_empty(),
        "{what}: temporary files left: {litter:?}"
    );
}

/// SIGKILL at several points of a run (mid-step, during a checkpoint write, between checkpoint
/// and metrics line, mid-epoch after a periodic checkpoint), then --resume: metrics, step log
/// and final weights equal an uninterrupted run's bit for bit. Then the same for Ctrl-C.
#[cfg(unix)]
#[test]
fn killed_or_interrupted_runs_resume_bit_exactly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tmpdir("kill");
    let t = tmp.path();
    let data = t.join("data");
    // 4 steps of 16 per epoch, 3 epochs, a periodic checkpoint every 2 steps.
    write_idx(&data, 64, 28, 16, 28);
    let d = data.to_str().unwrap();
    let reference = t.join("reference");
    ok(&tiny_train(d, reference.to_str().unwrap(), "3"), t, &[]);
    assert_eq!(metrics_values(&reference).len(), 3);
    assert_eq!(steps_values(&reference).len(), 12);

    for fault in [
        "step:3",
        "step:7",
        "checkpoint-write:2",
        "checkpoint-write:5",
        "after-checkpoint:1",
        "after-checkpoint:2",
        // A graceful stop between epoch 2's two evaluation batches: the checkpoint holds the
        // tensors that evaluation started from, and the resumed run evaluates again.
        "stop-in-eval:3",
    ] {
        let dir = t.join(fault.replace(':', "-"));
        let args = tiny_train(d, dir.to_str().unwrap(), "3");
        let out = fsnn_env(&args, t, &[("FSNN_FAULT", fault)]);
        let (got, want) = if fault.starts_with("stop-") {
            (out.status.code(), Some(130))
        } else {
            (out.status.signal(), Some(9))
        };
        assert_eq!(
            got,
            want,
            "{fault}: expected {}, got {:?}:\n{}",
            if fault.starts_with("stop-") {
                "exit 130"
            } else {
                "SIGKILL"
            },
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut resume = args.clone();
        resume.push("--resume");
        let log = ok(&resume, t, &[]);
        println!(
            "{fault}: {}",
            log.lines()
                .find(|l| l.starts_with("resuming"))
                .unwrap_or("")
        );
        same_run(&reference, &dir, fault);
    }

    // fsnn eval of a checkpoint reproduces the test metrics its run logged, exactly: best is the
    // first epoch with the highest test accuracy, last the last epoch.
    // Compared as the text written: serde_json's default float parser may read two neighbouring
    // doubles as one.
    let lines: Vec<String> = std::fs::read_to_string(reference.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let logged = metrics_values(&reference);
    let best = (0..logged.len()).fold(0, |b, i| {
        if logged[i]["test_acc"].as_f64() > logged[b]["test_acc"].as_f64() {
            i
        } else {
            b
        }
    });
    // (Without --eval-batch, eval takes the run's: the power step runs once per batch.)
    for (file, want, batch) in [
        ("best.safetensors", &lines[best], None),
        ("last.safetensors", &lines[2], Some("8")),
    ] {
        let path = reference.join(file);
        let mut args = vec![
            "eval",
            "--checkpoint",
            path.to_str().unwrap(),
            "--data-dir",
            d,
        ];
        if let Some(b) = batch {
            args.extend(["--eval-batch", b]);
        }
        args.push("--json");
        let out = fsnn(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8(out.stdout).unwrap();
        println!("eval {file}: {}", got.trim());
        for k in ["test_loss", "test_acc"] {
            assert_eq!(
                number_text(&got, k),
                number_text(want, k),
                "eval {file}: {k} differs from the run's line {want}"
            );
        }
    }

    // Ctrl-C, SIGTERM and SIGHUP: the first signal finishes the step, checkpoints and exits
    // with 128 + its number, saying how to resume (as the user started fsnn: through cargo run,
    // which the test runner's environment imitates, or by the binary's path).
    for (sig, name, status, via_cargo) in [
        (libc::SIGINT, "Ctrl-C", 130, true),
        (libc::SIGTERM, "SIGTERM", 143, false),
        (libc::SIGHUP, "SIGHUP", 129, false),
    ] {
        let dir = t.join(name);
        let args = tiny_train(d, dir.to_str().unwrap(), "3");
        let mut cmd = fsnn_command();
        cmd.args(&args)
            .current_dir(t)
            .env_remove("FSNN_ADAPTER")
            .stderr(std::process::Stdio::piped());
        // The signal's default disposition, whatever this test runner inherited (`nohup` leaves
        // SIGHUP ignored, and fsnn then keeps it so).
        // SAFETY: signal(2) between fork and exec is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::signal(sig, libc::SIG_DFL);
                Ok(())
            });
        }
        if via_cargo {
            cmd.env("CARGO", "cargo").env("CARGO_PKG_NAME", "fsnn-cli");
        } else {
            cmd.env_remove("CARGO");
        }
        let child = cmd.spawn().unwrap();
        let steps = dir.join("steps.jsonl");
        let t0 = std::time::Instant::now();
        while std::fs::read_to_string(&steps).map_or(0, |s| s.lines().count()) < 5 {
            assert!(t0.elapsed().as_secs() < 120, "the run did not get going");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{name}: {}", stderr.trim());
        // 7 steps and 2 evaluations were left when the signal went out: the run cannot have
        // finished first.
        assert_eq!(out.status.code(), Some(status), "{name}: {stderr}");
        let launcher = if via_cargo {
            // The test binary runs from target/release.
            "cargo run --release -p fsnn-cli --".to_string()
        } else {
            env!("CARGO_BIN_EXE_fsnn").to_string()
        };
        assert!(
            stderr.contains(&format!("{name}: finishing the current step"))
                && stderr.contains(&format!(
                    "resume with: {launcher} {} --resume",
                    args.join(" ")
                )),
            "{name}: {stderr}"
        );
        // The plot follows every epoch, not only the run's end: epoch 1 of 3 is done.
        assert!(dir.join("metrics.png").exists(), "{name}: no metrics.png");
        let mut resume = args.clone();
        resume.push("--resume");
        let log = ok(&resume, t, &[]);
        assert!(log.contains("resuming"), "{log}");
        same_run(&reference, &dir, name);
    }
}

/// One run per folder: two `fsnn train --out X` started together, one of them fails naming the
/// other's pid; `--resume` is refused while the run goes on; a SIGKILL releases the lock.
#[cfg(unix)]
#[test]
fn one_run_per_folder() {
    let tmp = tmpdir("lock");
    let t = tmp.path();
    let data = t.join("data");
    write_idx(&data, 64, 28, 16, 28);
    let d = data.to_str().unwrap();
    let dir = t.join("run");
    let args = tiny_train(d, dir.to_str().unwrap(), "1000");
    let start = || {
        fsnn_command()
            .args(&args)
            .current_dir(t)
            .env_remove("FSNN_ADAPTER")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runs = vec![start(), start()];
    // The loser exits at once; the winner trains on.
    let t0 = std::time::Instant::now();
    let loser = loop {
        if let Some(i) = (0..2).find(|&i| runs[i].try_wait().unwrap().is_some()) {
            break i;
        }
        assert!(t0.elapsed().as_secs() < 120, "neither run was refused");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut winner = runs.remove(1 - loser);
    let out = runs.pop().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("second run: {}", stderr.trim());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("another fsnn process (pid {})", winner.id()))
            && stderr.contains(&dir.display().to_string()),
        "{stderr}"
    );
    // A resume started while the run goes on is refused too, before it touches a file.
    let steps = dir.join("steps.jsonl");
    while std::fs::read_to_string(&steps).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed().as_secs() < 120, "the run did not get going");
        assert!(winner.try_wait().unwrap().is_none(), "the run ended");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut resume = args.clone();
    resume.push("--resume");
    let out = fsnn_env(&resume, t, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("pid {}", winner.id())),
        "{stderr}"
    );
    // SIGKILL: no destructor runs, the kernel drops the lock.
    winner.kill().unwrap();
    winner.wait().unwrap();
    let b = resume.iter().position(|&a| a == "--epochs").unwrap();
    resume[b + 1] = "1";
    ok(&resume, t, &[]);
}

/// A cache folder that cannot be written: training warns naming the path and goes on; it does
/// not claim "cached in". (Concurrent writers merging is tested in fsnn's `runs` module.)
#[test]
fn unwritable_cache_is_a_warning_with_its_path() {
    let tmp = tmpdir("cache");
    let t = tmp.path();
    let data = t.join("data");
    write_idx(&data, 16, 28, 16, 28);
    let d = data.to_str().unwrap();
    // A file where the cache folder should be: no permission bits involved (tests may run as
    // root), every write fails.
    let blocker = t.join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let cache = blocker.join("fsnn");
    let out = t.join("run");
    let mut args = tiny_train(d, out.to_str().unwrap(), "1");
    args.extend(["--kernels", "auto"]);
    let log = ok(&args, t, &[("FSNN_CACHE_DIR", cache.to_str().unwrap())]);
    assert!(
        log.contains("warning: cannot cache the kernel choice")
            && log.contains(&blocker.display().to_string())
            && !log.contains("cached in"),
        "{log}"
    );
}

/// Writes a tiny MNIST-format dataset (n training images of 28×28, n test images) into `dir`.
fn write_idx_square(dir: &std::path::Path, n: usize) {
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
    write_idx_square(&dir, 24);
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

/// `--kernels auto` times both simulations once (the event path of linear feedback walking its
/// spikes both ways), stores the choice under FSNN_CACHE_DIR keyed by adapter, driver and shape,
/// and the next run reuses it without measuring.
#[test]
fn bench_step_kernels_auto_measures_once_and_caches() {
    let dir = std::env::temp_dir().join(format!("fsnn-kernels-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = || bench_step_auto("fc400", "8", &dir);
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
    // Linear feedback: the event path is timed walking the spikes both ways, and the faster
    // walk is the one kept.
    positive(&choice["event_list_ms"], "event_list_ms");
    let (bits_or_list, list) = (
        choice["event_ms"].as_f64().unwrap(),
        choice["event_list_ms"].as_f64().unwrap(),
    );
    assert!(
        bits_or_list <= list,
        "event_ms is not the faster walk: {choice}"
    );
    let walk = choice["walk"].as_str().expect("walk");
    assert!(walk == "bits" || bits_or_list == list, "{choice}");
    assert_eq!(v1["kernels"], choice["kernels"]);
    let (v2, err2) = run();
    assert!(!err2.contains("kernels auto:"), "measured again: {err2}");
    assert_eq!(v2["kernels"], choice["kernels"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// For conv feedback, `--kernels auto` times the event step in both layouts (the lanes form takes
/// conv64's 14-wide rows) and keeps the faster.
#[test]
fn bench_step_kernels_auto_times_both_conv_event_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (_, stderr) = bench_step_auto("conv64", "2", dir.path());
    assert!(stderr.contains("(lanes "), "no lanes measurement: {stderr}");
    let cache: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("kernels.json")).unwrap()).unwrap();
    let choice = cache
        .as_object()
        .unwrap()
        .values()
        .next()
        .expect("a choice");
    let (event, lanes) = (
        positive(&choice["event_ms"], "event_ms"),
        positive(&choice["event_lanes_ms"], "event_lanes_ms"),
    );
    assert!(event <= lanes, "event_ms is not the faster form: {choice}");
    let form = choice["conv_form"].as_str().expect("conv_form");
    assert!(form == "phases" || event == lanes, "{choice}");
    assert!(choice["event_list_ms"].is_null(), "{choice}");
}

/// `fsnn bench step --preset PRESET --time-steps 2 --batch-size BATCH --runs 1 --kernels auto
/// --json` with its kernel cache in `cache`: the JSON and the standard error.
fn bench_step_auto(preset: &str, batch: &str, cache: &std::path::Path) -> (Value, String) {
    let out = fsnn_command()
        .args([
            "bench",
            "step",
            "--preset",
            preset,
            "--time-steps",
            "2",
            "--batch-size",
            batch,
            "--runs",
            "1",
            "--kernels",
            "auto",
            "--json",
        ])
        .env_remove("FSNN_ADAPTER")
        .env("FSNN_CACHE_DIR", cache)
        .output()
        .expect("cannot run fsnn");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "fsnn failed:\n{stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// One of the adapter's limits from `fsnn info --json`.
fn adapter_limit(name: &str) -> u64 {
    json(&["info", "--json"])["limits"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("limits.{name} missing"))
}

/// A step's largest buffer (the Broyden history, 2 × 27 vectors of the last layer per sample)
/// over the device's largest buffer is refused up front with the batch that fits, where wgpu's
/// `create_buffer` used to panic (fc400 at 30,000, conv64 at 800 on lavapipe).
#[test]
fn bench_step_refuses_a_batch_whose_solver_history_exceeds_the_largest_buffer() {
    let max_buffer = adapter_limit("max_buffer_size");
    let binding = adapter_limit("max_storage_buffer_binding_size");
    // (preset, last layer's neurons, one sample's input values)
    for (preset, neurons, input) in [("fc400", 400u64, 784u64), ("conv64", 64 * 14 * 14, 784)] {
        let per_sample = 54 * neurons * 4;
        let batch = max_buffer / per_sample + 1;
        let b = batch.to_string();
        let out = fsnn(&[
            "bench",
            "step",
            "--preset",
            preset,
            "--batch-size",
            &b,
            "--runs",
            "1",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{preset} at {b} ran");
        assert!(
            !err.contains("panicked"),
            "{preset} at {b} panicked:\n{err}"
        );
        assert!(err.contains(&format!("--batch-size {b}")), "{err}");
        // Where one binding holds the batch's values, the history is what bites.
        if batch * neurons.max(input) * 4 <= binding {
            assert!(
                err.contains("solver's history")
                    && err.contains(&format!("the most that fits is {}", batch - 1)),
                "{err}"
            );
        }
    }
}

/// `--runs` beyond what a run can hold (each timed step has a batch of its own) is refused; the
/// largest `usize` used to overflow `runs + 2`.
#[test]
fn bench_step_refuses_runs_out_of_range() {
    for runs in ["18446744073709551615", "10001", "0"] {
        let out = fsnn(&["bench", "step", "--runs", runs, "--batch-size", "2"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.contains("panicked"), "{err}");
        assert!(
            err.contains(&format!("--runs must be 1 to 10000, got {runs}")),
            "{err}"
        );
    }
}

/// `--trace` and `--chart` into a folder that does not exist fail before any step runs, naming
/// the path; a folder given as the file is refused too.
#[test]
fn bench_step_output_paths_are_checked_before_running() {
    let tmp = tmpdir("bench-out");
    let dir = tmp.path().to_str().unwrap();
    for (flag, path, want) in [
        (
            "--trace",
            "/missing/x.json".to_owned(),
            "the folder /missing does not exist",
        ),
        (
            "--chart",
            "/missing/c.png".to_owned(),
            "the folder /missing does not exist",
        ),
        ("--trace", dir.to_owned(), "a folder, not a file"),
    ] {
        let t0 = std::time::Instant::now();
        let out = fsnn(&[
            "bench",
            "step",
            "--batch-size",
            "2",
            "--runs",
            "1",
            flag,
            &path,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {path} ran");
        assert!(err.contains(&format!("{flag} {path}: {want}")), "{err}");
        // Refused before the model is built and stepped (a step alone takes longer).
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ms"),
            "{err}"
        );
        println!(
            "{flag} {path}: refused in {:.2} s",
            t0.elapsed().as_secs_f64()
        );
    }
}

/// A `--data-dir` that is missing, a file, or a folder without the files says what is wrong
/// with that path, never an internal function's name.
#[test]
fn data_dir_problems_name_the_path() {
    let tmp = tmpdir("data-dir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = tmp.path().join("missing");
    let (f, e, m) = (
        file.to_str().unwrap(),
        empty.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    let out_dir = tmp.path().join("run");
    let o = out_dir.to_str().unwrap();
    for (ds, dir, want) in [
        ("mnist", m, format!("{m}: no such folder")),
        ("nmnist", m, format!("{m}: no such folder")),
        ("cifar10", m, format!("{m}: no such folder")),
        ("mnist", f, format!("{f}: a file, not a folder")),
        ("nmnist", f, format!("{f}: a file, not a folder")),
        (
            "mnist",
            e,
            format!(
                "{e}/train-images-idx3-ubyte: not found (nor train-images-idx3-ubyte.gz); copy"
            ),
        ),
    ] {
        let out = fsnn(&[
            "train",
            "--dataset",
            ds,
            "--data-dir",
            dir,
            "--epochs",
            "1",
            "--out",
            o,
            "--force",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ds} {dir} ran");
        assert!(err.contains(&want), "{ds} {dir}: {err}");
        assert!(!err.contains("ensure_"), "{ds} {dir}: {err}");
    }
    let folder = format!("folder:{m}");
    let out = fsnn(&[
        "train",
        "--dataset",
        &folder,
        "--epochs",
        "1",
        "--out",
        o,
        "--force",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{m}: no such folder")), "{err}");
}

/// The native CPU backend (`--device cpu`) trains deterministically (two runs, the same bits),
/// agrees with the WGSL path on lavapipe to float tolerance, and its checkpoint evaluates on
/// either backend: the CPU reproduces the logged test metrics exactly, the GPU within tolerance.
#[test]
fn cpu_backend_trains_deterministically_and_checkpoints_cross_backends() {
    let tmp = tmpdir("cpu-backend");
    let data = tmp.path().join("data");
    write_idx_square(&data, 48);
    let d = data.to_str().unwrap();
    let run = |device: &str, out: &str| {
        let o = tmp.path().join(out);
        let mut args = tiny_train(d, o.to_str().unwrap(), "2");
        args.extend(["--device", device]);
        let stderr = ok(&args, tmp.path(), &[]);
        (o, stderr)
    };
    let (c1, s1) = run("cpu", "cpu1");
    assert!(s1.contains("device: CPU"), "no CPU device line:\n{s1}");
    let (c2, _) = run("cpu", "cpu2");
    assert_eq!(metrics_values(&c1), metrics_values(&c2), "CPU runs differ");
    assert_eq!(steps_values(&c1), steps_values(&c2), "CPU step logs differ");
    let (g, _) = run("gpu", "gpu");
    let (mc, mg) = (metrics_values(&c1), metrics_values(&g));
    assert_eq!(mc.len(), mg.len());
    let mut worst = 0f64;
    for (a, b) in mc.iter().zip(&mg) {
        for k in ["train_loss", "test_loss", "solver_iters_mean"] {
            let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
            worst = worst.max((x - y).abs() / y.abs().max(1e-3));
        }
    }
    println!("CPU vs GPU metrics: worst relative difference {worst:.2e}");
    assert!(worst < 1e-3, "CPU and GPU runs disagree: {mc:?} vs {mg:?}");

    let logged = &mc.last().unwrap()["test_acc"];
    let last = c1.join("last.safetensors");
    for device in ["cpu", "gpu"] {
        let out = fsnn_env(
            &[
                "eval",
                "--checkpoint",
                last.to_str().unwrap(),
                "--data-dir",
                d,
                "--json",
                "--device",
                device,
            ],
            tmp.path(),
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "eval on {device} failed:\n{stderr}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        println!(
            "eval on {device}: test_acc {} (logged {logged})",
            v["test_acc"]
        );
        if device == "cpu" {
            assert_eq!(&v["test_acc"], logged, "CPU eval differs from the log");
        } else {
            let (x, y) = (v["test_acc"].as_f64().unwrap(), logged.as_f64().unwrap());
            assert!((x - y).abs() <= 1.0 / 16.0, "GPU eval {x} vs logged {y}");
        }
    }
}

#[test]
fn meaningless_settings_are_refused_before_the_device_starts() {
    let tmp = tmpdir("meaningless");
    let t = tmp.path();
    let model =
        "name = \"fc8bn\"\nclasses = 10\n[input]\nshape = [784]\n[neuron]\ntime_steps = 2\n\
                 vth = 2.0\nleak = 0.95\ndropout = 0.2\n[[layers]]\n\
                 ops = [{ kind = \"linear\", out = 8 }, { kind = \"batchnorm\" }]\n\
                 [feedback]\nkind = \"linear\"\n";
    let file = t.join("fc8bn.toml");
    std::fs::write(&file, model).unwrap();
    let out = t.join("run");
    fails_with(
        &[
            "train",
            "--model",
            file.to_str().unwrap(),
            "--batch-size",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        "--batch-size 1: model fc8bn has batch norm",
    );
    assert!(!out.exists(), "a refused run created its folder");

    // A checkpoint with a NaN weight is refused at load, naming the file and the tensor.
    let data = t.join("data");
    write_idx(&data, 8, 28, 8, 28);
    let fc = serde_json::to_value(fsnn::model::spec::preset("fc400").unwrap()).unwrap();
    let mut meta = std::collections::HashMap::new();
    meta.insert("fsnn.model".to_string(), fc.to_string());
    let bytes: Vec<u8> = [1.0f32, f32::NAN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &bytes).unwrap();
    let ck = t.join("nan.safetensors");
    std::fs::write(
        &ck,
        safetensors::serialize(vec![("w0".to_string(), view)], &Some(meta)).unwrap(),
    )
    .unwrap();
    let err = fails_with(
        &[
            "eval",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--dataset",
            "mnist",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "tensor w0 holds NaN at index 1",
    );
    assert!(err.contains("nan.safetensors"), "{err}");
}
