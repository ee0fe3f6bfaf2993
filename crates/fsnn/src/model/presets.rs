//! The paper's single-layer models (ALGORITHM.md §5).

use super::{Arch, NetConfig};
use crate::solver::SolverKind;

pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub default_dataset: &'static str,
    /// The adjoint solver the paper's run of this row used.
    pub default_solver: SolverKind,
    pub config: NetConfig,
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
            config: NetConfig {
                preset: "fc400".into(),
                arch: Arch::Fc { input: 784, hidden: 400 },
                classes: 10,
                time_steps: 5,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
                time_varying: false,
            },
        },
        Preset {
            name: "conv64",
            description: "Conv 1→64 5×5 s2 p2 + BN → 64×14×14, feedback conv 64→64 5×5 (SN), classifier 12544→10, T=30",
            default_dataset: "mnist",
            default_solver: SolverKind::Broyden,
            config: NetConfig {
                preset: "conv64".into(),
                arch: Arch::Conv { cin: 1, h: 28, w: 28, channels: 64, k_in: 5, stride_in: 2, pad_in: 2, k_fb: 5 },
                classes: 10,
                time_steps: 30,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
                time_varying: false,
            },
        },
        Preset {
            name: "conv64-nmnist",
            description: "N-MNIST events, T=30 frames: conv 2→64 5×5 s2 p2 + BN → 64×17×17 per frame, feedback conv 64→64 5×5 (SN), classifier 18496→10",
            default_dataset: "nmnist",
            default_solver: SolverKind::FixedPoint,
            config: nmnist("conv64-nmnist", 2),
        },
        Preset {
            name: "conv64-nmnist-p1",
            description: "conv64-nmnist with padding 1 (→ 64×16×16), as the authors' released code",
            default_dataset: "nmnist",
            default_solver: SolverKind::FixedPoint,
            config: nmnist("conv64-nmnist-p1", 1),
        },
    ]
}

pub fn find(name: &str) -> anyhow::Result<Preset> {
    all().into_iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|p| p.name).collect();
        anyhow::anyhow!("unknown preset {name:?}; available: {}", names.join(", "))
    })
}
