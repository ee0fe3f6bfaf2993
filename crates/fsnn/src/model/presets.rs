//! The paper's models (ALGORITHM.md §5).

use super::multi::{AdjointForm, ConvSpec, MultiConfig};
use super::{Arch, ModelConfig, NetConfig};
use crate::solver::SolverKind;

pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub default_dataset: &'static str,
    /// The adjoint solver the paper's run of this row used.
    pub default_solver: SolverKind,
    /// Epochs at which the paper's recipe divides the learning rate by 10.
    pub schedule: &'static [usize],
    /// Iterations of linear learning-rate warm-up in the paper's recipe.
    pub warmup: usize,
    pub config: ModelConfig,
}

fn nmnist(name: &str, pad: usize) -> NetConfig {
    NetConfig {
        preset: name.into(),
        arch: Arch::Conv {
            cin: 2,
            h: 34,
            w: 34,
            channels: 64,
            k_in: 5,
            stride_in: 2,
            pad_in: pad,
            k_fb: 5,
        },
        classes: 10,
        time_steps: 30,
        vth: 2.0,
        leak: 0.95,
        dropout: 0.2,
        time_varying: true,
    }
}

pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "fc400",
            description: "Linear 784→400 + BN, feedback linear 400→400 (SN), classifier 400→10, T=5",
            default_dataset: "fashion-mnist",
            default_solver: SolverKind::Broyden,
            schedule: &[30, 60, 90],
            warmup: 0,
            config: ModelConfig::Single(NetConfig {
                preset: "fc400".into(),
                arch: Arch::Fc { input: 784, hidden: 400 },
                classes: 10,
                time_steps: 5,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
                time_varying: false,
            }),
        },
        Preset {
            name: "conv64",
            description: "Conv 1→64 5×5 s2 p2 + BN → 64×14×14, feedback conv 64→64 5×5 (SN), classifier 12544→10, T=30",
            default_dataset: "mnist",
            default_solver: SolverKind::Broyden,
            schedule: &[30, 60, 90],
            warmup: 0,
            config: ModelConfig::Single(NetConfig {
                preset: "conv64".into(),
                arch: Arch::Conv { cin: 1, h: 28, w: 28, channels: 64, k_in: 5, stride_in: 2, pad_in: 2, k_fb: 5 },
                classes: 10,
                time_steps: 30,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
                time_varying: false,
            }),
        },
        Preset {
            name: "conv64-nmnist",
            description: "N-MNIST events, T=30 frames: conv 2→64 5×5 s2 p2 + BN → 64×17×17 per frame, feedback conv 64→64 5×5 (SN), classifier 18496→10",
            default_dataset: "nmnist",
            default_solver: SolverKind::FixedPoint,
            schedule: &[30, 60, 90],
            warmup: 0,
            config: ModelConfig::Single(nmnist("conv64-nmnist", 2)),
        },
        Preset {
            name: "conv64-nmnist-p1",
            description: "conv64-nmnist with padding 1 (→ 64×16×16), as the authors' released code",
            default_dataset: "nmnist",
            default_solver: SolverKind::FixedPoint,
            schedule: &[30, 60, 90],
            warmup: 0,
            config: ModelConfig::Single(nmnist("conv64-nmnist-p1", 1)),
        },
    ]
    .into_iter()
    .chain(multi_presets())
    .collect()
}

/// AlexNet-F / CIFARNet-F: a stride-2 input conv to 16×16, four 3×3 conv layers (the second
/// with stride 2), and a transposed-conv feedback from the last layer (8×8) to the first (16×16).
fn cifar_multi(name: &str, channels: [usize; 5], classes: usize) -> MultiConfig {
    let c = |cout, stride| ConvSpec {
        cout,
        k: 3,
        stride,
        pad: 1,
    };
    MultiConfig {
        preset: name.into(),
        cin: 3,
        h: 32,
        w: 32,
        fx: c(channels[0], 2),
        layers: vec![
            c(channels[1], 1),
            c(channels[2], 2),
            c(channels[3], 1),
            c(channels[4], 1),
        ],
        fb_k: 3,
        fb_stride: 2,
        fb_pad: 1,
        fb_output_pad: 1,
        classes,
        time_steps: 30,
        vth: 2.0,
        leak: 0.99,
        dropout: 0.2,
        adjoint: AdjointForm::Authors,
    }
}

fn multi_presets() -> Vec<Preset> {
    let mut v = Vec::new();
    for (base, ch) in [
        ("alexnet-f", [96, 256, 384, 384, 256]),
        ("cifarnet-f", [128, 256, 512, 1024, 512]),
    ] {
        for (suffix, classes, ds) in [("", 10, "cifar10"), ("-100", 100, "cifar100")] {
            let name: &'static str = Box::leak(format!("{base}{suffix}").into_boxed_str());
            v.push(Preset {
                name,
                description: if base == "alexnet-f" {
                    "AlexNet-F: conv 3→96 s2 + BN, 96→256→384(s2)→384→256 3×3 + BN, feedback ConvT 256→96 s2 (SN), T=30"
                } else {
                    "CIFARNet-F: conv 3→128 s2 + BN, 128→256→512(s2)→1024→512 3×3 + BN, feedback ConvT 512→128 s2 (SN), T=30"
                },
                default_dataset: ds,
                default_solver: SolverKind::Broyden,
                schedule: &[50, 75],
                warmup: 400,
                config: ModelConfig::Multi(cifar_multi(name, ch, classes)),
            });
        }
    }
    v
}

pub fn find(name: &str) -> anyhow::Result<Preset> {
    all().into_iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|p| p.name).collect();
        anyhow::anyhow!("unknown preset {name:?}; available: {}", names.join(", "))
    })
}
