//! Which kernels the forward simulation runs: dense products on 0/1 spike tensors, or the
//! event-driven kernels that add weight rows for the spikes only (`ops::fc_event_sim`,
//! `ops::conv_event_sim`). Both give the same spikes; which is faster depends on the adapter, so
//! `Auto` measures both once per adapter, driver and shape and remembers the answer on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::gpu::{ConvEventForm, Gpu, SpikeWalk};
use crate::model::network::{feedback_conv, Network};
use crate::model::spec::{FeedbackSpec, NetworkSpec};
use crate::model::HostRng;
use crate::ops;

pub use fsnn_core::Kernels;

/// Most simulation steps of the passes `Auto` times.
pub const MEASURE_STEPS: usize = 4;

/// What `Auto` measured for one adapter, driver and shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub kernels: Kernels,
    pub dense_ms: f64,
    /// The event path in its fastest form (see `walk` and `conv_form`).
    pub event_ms: f64,
    /// How the linear event kernel walks spikes, where it was measured both ways.
    #[serde(default)]
    pub walk: SpikeWalk,
    /// The linear event path walking a spike list (`event_ms` is then the faster of the two).
    #[serde(default)]
    pub event_list_ms: Option<f64>,
    /// How the conv event step lays out its work, where it was measured both ways.
    #[serde(default)]
    pub conv_form: ConvEventForm,
    /// The conv event path in the lanes form (`event_ms` is then the faster of the two).
    #[serde(default)]
    pub event_lanes_ms: Option<f64>,
}

impl Choice {
    /// Makes `gpu` run the event kernels in the measured forms.
    fn apply(&self, gpu: &Gpu) {
        gpu.set_spike_walk(self.walk);
        gpu.set_conv_event_form(self.conv_form);
    }
}

/// The file `Auto` keeps its measurements in: `kernels.json` in [`fsnn_core::cache::cache_dir`]
/// (`$FSNN_CACHE_DIR`, else `$XDG_CACHE_HOME/fsnn`, else `~/.cache/fsnn`, else the temporary
/// directory).
pub fn cache_path() -> PathBuf {
    fsnn_core::cache::cache_dir().join("kernels.json")
}

/// The cache key: adapter, backend, driver and its version, everything the simulation's cost
/// depends on (architecture, T, batch, input kind), and the version of the candidate set, so
/// that new candidates are measured again.
pub fn cache_key(gpu: &Gpu, cfg: &NetworkSpec, batch: usize) -> String {
    let i = &gpu.ctx.info;
    format!(
        "{} | {} | {} {} | input {:?} {:?} feedback {:?} T={} batch={} time_varying={} | forms v{FORM_SET}",
        i.name,
        i.backend,
        i.driver,
        i.driver_info,
        cfg.input.shape,
        cfg.layers,
        cfg.feedback,
        cfg.neuron.time_steps,
        batch,
        cfg.input.time_varying
    )
}

/// Bumped whenever the candidates [`measure`] times change (2: the event kernels' second forms).
const FORM_SET: u32 = 2;

/// Whether the GPU's event-driven simulation handles this network (the rule is
/// [`crate::model::network::events_supported`], for every backend).
pub fn events_supported(cfg: &NetworkSpec) -> bool {
    crate::model::network::events_supported::<Gpu>(cfg)
}

fn load_cache(path: &Path) -> BTreeMap<String, Choice> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The forward simulation's kernels for this model on this adapter: `requested` unless it is
/// `Auto`, which times both paths once (a few forward passes on random input at the model's
/// shape) and caches the faster in [`cache_path`]; `Auto` also sets `gpu`'s event kernel forms
/// ([`SpikeWalk`], [`ConvEventForm`]) to the faster ones. Models without an event path get `Dense`.
pub fn resolve(gpu: &Gpu, cfg: &NetworkSpec, batch: usize, requested: Kernels) -> Result<Kernels> {
    let net_cfg = cfg;
    if !events_supported(net_cfg) {
        return Ok(Kernels::Dense);
    }
    if requested != Kernels::Auto {
        return Ok(requested);
    }
    let path = cache_path();
    let key = cache_key(gpu, net_cfg, batch);
    let cache = load_cache(&path);
    if let Some(c) = cache.get(&key) {
        c.apply(gpu);
        return Ok(c.kernels);
    }
    let c = measure(gpu, net_cfg, batch)?;
    let list = c
        .event_list_ms
        .map(|l| format!(" (spike list {l:.1} ms: walks {})", c.walk.name()))
        .or(c
            .event_lanes_ms
            .map(|l| format!(" (lanes {l:.1} ms: {})", c.conv_form.name())))
        .unwrap_or_default();
    c.apply(gpu);
    // A cache that cannot be written only costs the measurement next time: a warning, not an
    // error.
    let stored = store_cache(&path, &key, &c);
    eprintln!(
        "kernels auto: dense {:.1} ms, event {:.1} ms{list} per forward pass of at most {MEASURE_STEPS} steps -> {}{}",
        c.dense_ms,
        c.event_ms,
        c.kernels,
        match &stored {
            Ok(()) => format!(" (cached in {})", path.display()),
            Err(_) => " (not cached)".to_string(),
        }
    );
    if let Err(e) = stored {
        eprintln!("warning: cannot cache the kernel choice: {e:#}");
    }
    Ok(c.kernels)
}

/// Adds one entry to the cache file, merged with what other processes wrote meanwhile.
fn store_cache(path: &Path, key: &str, c: &Choice) -> Result<()> {
    crate::runs::merge_into_json_map(path, BTreeMap::from([(key.to_string(), c.clone())]))
}

/// Median wall time of forward passes with each kernel choice, alternating between them (the
/// event path in each of its forms: for linear feedback walking the spikes as a bit set and as a
/// list, for conv feedback in both [`ConvEventForm`]s where the lanes form takes the shape). The
/// passes simulate at most [`MEASURE_STEPS`] steps: the paths differ per step, and a full T=30
/// conv pass would make the one-off measurement take minutes on a software driver. Leaves `gpu`'s
/// event kernel forms as it found them.
pub fn measure(gpu: &Gpu, cfg: &NetworkSpec, batch: usize) -> Result<Choice> {
    let mut cfg = cfg.clone();
    cfg.neuron.time_steps = cfg.neuron.time_steps.min(MEASURE_STEPS);
    let cfg = &cfg;
    let mut rng = HostRng::new(7);
    let x: Vec<f32> = (0..batch * cfg.sample_len())
        .map(|_| rng.uniform(-0.5, 2.5))
        .collect();
    let y: Vec<u32> = (0..batch)
        .map(|i| (i % cfg.classes.max(1)) as u32)
        .collect();
    let (bits, phases) = (SpikeWalk::Bits, ConvEventForm::Phases);
    // (kernels, walk, conv form) of each candidate: the dense path, then the event path's forms.
    let mut candidates = vec![
        (Kernels::Dense, bits, phases),
        (Kernels::Event, bits, phases),
    ];
    if matches!(cfg.feedback, FeedbackSpec::Linear {}) {
        candidates.push((Kernels::Event, SpikeWalk::List, phases));
    }
    if feedback_conv(cfg, batch).is_some_and(|s| ops::conv_event_lanes_supported(&s)) {
        candidates.push((Kernels::Event, bits, ConvEventForm::Lanes));
    }
    let before = (gpu.spike_walk(), gpu.conv_event_form());
    let set = |walk, form| {
        gpu.set_spike_walk(walk);
        gpu.set_conv_event_form(form);
    };
    let mut nets = Vec::new();
    for &(k, _, _) in &candidates {
        let mut n = Network::new(gpu, cfg.clone(), 0)?;
        n.select_kernels(k);
        nets.push(n);
    }
    // Warm-up: pipelines and buffers.
    for (n, &(_, walk, form)) in nets.iter_mut().zip(&candidates) {
        set(walk, form);
        n.eval_batch(gpu, &x, &y)?;
    }
    let mut ms = vec![Vec::new(); candidates.len()];
    for _ in 0..3 {
        for (k, (n, &(_, walk, form))) in nets.iter_mut().zip(&candidates).enumerate() {
            set(walk, form);
            let t = Instant::now();
            n.eval_batch(gpu, &x, &y)?;
            ms[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    set(before.0, before.1);
    let med: Vec<f64> = ms
        .iter_mut()
        .map(|v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    // The fastest event form (the first on a tie).
    let best = (1..candidates.len())
        .min_by(|&i, &j| med[i].total_cmp(&med[j]))
        .expect("the event path is a candidate");
    let other = |walk: SpikeWalk, form: ConvEventForm| {
        (2..candidates.len())
            .find(|&i| candidates[i].1 == walk && candidates[i].2 == form)
            .map(|i| med[i])
    };
    let (dense_ms, event_ms) = (med[0], med[best]);
    Ok(Choice {
        kernels: if event_ms <= dense_ms {
            Kernels::Event
        } else {
            Kernels::Dense
        },
        dense_ms,
        event_ms,
        walk: candidates[best].1,
        event_list_ms: other(SpikeWalk::List, phases),
        conv_form: candidates[best].2,
        event_lanes_ms: other(bits, ConvEventForm::Lanes),
    })
}

/// `fsnn tune`: measures the dense and event paths for this model anew (whatever the cache holds)
/// and stores the result as [`resolve`] would. `None` for models without an event path; the
/// measurement comes back even when the cache cannot be written (the error says why, naming the
/// file).
pub fn remeasure(
    gpu: &Gpu,
    cfg: &NetworkSpec,
    batch: usize,
) -> Result<Option<(Choice, Result<()>)>> {
    let net_cfg = cfg;
    if !events_supported(net_cfg) {
        return Ok(None);
    }
    let c = measure(gpu, net_cfg, batch)?;
    let stored = store_cache(&cache_path(), &cache_key(gpu, net_cfg, batch), &c);
    Ok(Some((c, stored)))
}
