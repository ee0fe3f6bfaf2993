//! The paper's single-layer models (ALGORITHM.md §5).

use super::{Arch, NetConfig};

pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub default_dataset: &'static str,
    pub config: NetConfig,
}

pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            name: "fc400",
            description: "Linear 784→400 + BN, feedback linear 400→400 (SN), classifier 400→10, T=5",
            default_dataset: "fashion-mnist",
            config: NetConfig {
                preset: "fc400".into(),
                arch: Arch::Fc { input: 784, hidden: 400 },
                classes: 10,
                time_steps: 5,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
            },
        },
        Preset {
            name: "conv64",
            description: "Conv 1→64 5×5 s2 p2 + BN → 64×14×14, feedback conv 64→64 5×5 (SN), classifier 12544→10, T=30",
            default_dataset: "mnist",
            config: NetConfig {
                preset: "conv64".into(),
                arch: Arch::Conv { cin: 1, h: 28, w: 28, channels: 64, k_in: 5, stride_in: 2, pad_in: 2, k_fb: 5 },
                classes: 10,
                time_steps: 30,
                vth: 2.0,
                leak: 0.95,
                dropout: 0.2,
            },
        },
    ]
}

pub fn find(name: &str) -> anyhow::Result<Preset> {
    all().into_iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|p| p.name).collect();
        anyhow::anyhow!("unknown preset {name:?}; available: {}", names.join(", "))
    })
}
