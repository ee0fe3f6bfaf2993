//! Model descriptions as checkpoints stored them before model files existed: a `ModelConfig`
//! JSON object (`{"kind": "Single", ...}` for the single-layer network, `{"kind": "Multi", ...}`
//! for the multi-layer one), or, older still, a bare single-layer config. These are private,
//! serde-only copies of those types; [`to_spec`] turns one into the [`NetworkSpec`] that states the
//! same network, whose parameters have the same names and shapes, so old weights load.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::spec::{
    self, AdjointForm, FeedbackSpec, InputSpec, LayerSpec, NetworkSpec, NeuronSpec, OpSpec,
    TrainDefaults,
};

#[derive(Deserialize)]
#[serde(tag = "kind")]
enum ModelConfig {
    Single(NetConfig),
    Multi(MultiConfig),
}

#[derive(Deserialize)]
enum Arch {
    Fc {
        input: usize,
        hidden: usize,
    },
    Conv {
        cin: usize,
        h: usize,
        w: usize,
        channels: usize,
        k_in: usize,
        stride_in: usize,
        pad_in: usize,
        k_fb: usize,
    },
}

#[derive(Deserialize)]
struct NetConfig {
    preset: String,
    arch: Arch,
    classes: usize,
    time_steps: usize,
    vth: f32,
    leak: f32,
    dropout: f32,
    #[serde(default)]
    time_varying: bool,
}

#[derive(Deserialize, Clone, Copy)]
struct ConvSpec {
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
}

#[derive(Deserialize)]
struct MultiConfig {
    preset: String,
    cin: usize,
    h: usize,
    w: usize,
    fx: ConvSpec,
    layers: Vec<ConvSpec>,
    fb_k: usize,
    fb_stride: usize,
    fb_pad: usize,
    fb_output_pad: usize,
    classes: usize,
    time_steps: usize,
    vth: f32,
    leak: f32,
    dropout: f32,
    /// Checkpoints written before the choice existed were trained with the consistent form.
    #[serde(default = "AdjointForm::consistent")]
    adjoint: AdjointForm,
}

/// Whether `json` looks like a pre-model-file description (it has a `kind` or an `arch` field,
/// which [`NetworkSpec`] never has).
pub fn is_legacy(json: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .is_some_and(|o| o.contains_key("kind") || o.contains_key("arch"))
}

/// The network a pre-model-file description states. Where its name and architecture are a
/// preset's, the preset's description and training defaults come with it, so an old checkpoint of
/// a preset reads back as exactly that preset.
pub fn to_spec(json: &str) -> Result<NetworkSpec> {
    let cfg: ModelConfig = serde_json::from_str(json)
        .or_else(|e| {
            serde_json::from_str::<NetConfig>(json)
                .map(ModelConfig::Single)
                .map_err(|_| e)
        })
        .context("a description from before model files, but not a well-formed one")?;
    let conv = |c: ConvSpec| OpSpec::Conv {
        out: c.cout,
        k: c.k,
        stride: c.stride,
        pad: c.pad,
        bias: true,
    };
    let bn = OpSpec::BatchNorm {};
    let mut spec = match cfg {
        ModelConfig::Single(c) => {
            let (shape, op, feedback) = match c.arch {
                Arch::Fc { input, hidden } => (
                    vec![input],
                    OpSpec::Linear {
                        out: hidden,
                        bias: true,
                    },
                    FeedbackSpec::Linear {},
                ),
                Arch::Conv {
                    cin,
                    h,
                    w,
                    channels,
                    k_in,
                    stride_in,
                    pad_in,
                    k_fb,
                } => (
                    vec![cin, h, w],
                    conv(ConvSpec {
                        cout: channels,
                        k: k_in,
                        stride: stride_in,
                        pad: pad_in,
                    }),
                    FeedbackSpec::Conv {
                        k: k_fb,
                        stride: 1,
                        pad: k_fb / 2,
                    },
                ),
            };
            NetworkSpec {
                name: c.preset,
                description: String::new(),
                classes: c.classes,
                input: InputSpec {
                    shape,
                    time_varying: c.time_varying,
                },
                neuron: NeuronSpec {
                    time_steps: c.time_steps,
                    vth: c.vth,
                    leak: c.leak,
                    dropout: c.dropout,
                },
                layers: vec![LayerSpec { ops: vec![op, bn] }],
                feedback,
                // The single-layer engine solved for β at the rate: the consistent form.
                adjoint: AdjointForm::Consistent,
                train: TrainDefaults::default(),
            }
        }
        ModelConfig::Multi(c) => NetworkSpec {
            name: c.preset,
            description: String::new(),
            classes: c.classes,
            input: InputSpec {
                shape: vec![c.cin, c.h, c.w],
                time_varying: false,
            },
            neuron: NeuronSpec {
                time_steps: c.time_steps,
                vth: c.vth,
                leak: c.leak,
                dropout: c.dropout,
            },
            layers: std::iter::once(c.fx)
                .chain(c.layers)
                .map(|l| LayerSpec {
                    ops: vec![conv(l), bn],
                })
                .collect(),
            feedback: FeedbackSpec::ConvTranspose {
                k: c.fb_k,
                stride: c.fb_stride,
                pad: c.fb_pad,
                output_pad: c.fb_output_pad,
            },
            adjoint: c.adjoint,
            train: TrainDefaults::default(),
        },
    };
    if let Ok(p) = spec::preset(&spec.name) {
        let same_network = NetworkSpec {
            description: p.description.clone(),
            train: p.train.clone(),
            ..spec.clone()
        };
        // The architecture is the preset's (neuron values and adjoint may have been overridden).
        if p.input == same_network.input
            && p.layers == same_network.layers
            && p.feedback == same_network.feedback
            && p.classes == same_network.classes
        {
            spec = same_network;
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON a checkpoint of each preset held before model files (copied from checkpoints of
    /// that version).
    const OLD: &[(&str, &str)] = &[
        (
            "fc400",
            r#"{"kind":"Single","preset":"fc400","arch":{"Fc":{"input":784,"hidden":400}},"classes":10,"time_steps":5,"vth":2.0,"leak":0.95,"dropout":0.2,"time_varying":false}"#,
        ),
        (
            "conv64",
            r#"{"kind":"Single","preset":"conv64","arch":{"Conv":{"cin":1,"h":28,"w":28,"channels":64,"k_in":5,"stride_in":2,"pad_in":2,"k_fb":5}},"classes":10,"time_steps":30,"vth":2.0,"leak":0.95,"dropout":0.2,"time_varying":false}"#,
        ),
        (
            "conv64-nmnist",
            r#"{"kind":"Single","preset":"conv64-nmnist","arch":{"Conv":{"cin":2,"h":34,"w":34,"channels":64,"k_in":5,"stride_in":2,"pad_in":2,"k_fb":5}},"classes":10,"time_steps":30,"vth":2.0,"leak":0.95,"dropout":0.2,"time_varying":true}"#,
        ),
        (
            "alexnet-f",
            r#"{"kind":"Multi","preset":"alexnet-f","cin":3,"h":32,"w":32,"fx":{"cout":96,"k":3,"stride":2,"pad":1},"layers":[{"cout":256,"k":3,"stride":1,"pad":1},{"cout":384,"k":3,"stride":2,"pad":1},{"cout":384,"k":3,"stride":1,"pad":1},{"cout":256,"k":3,"stride":1,"pad":1}],"fb_k":3,"fb_stride":2,"fb_pad":1,"fb_output_pad":1,"classes":10,"time_steps":30,"vth":2.0,"leak":0.99,"dropout":0.2,"adjoint":"authors"}"#,
        ),
    ];

    #[test]
    fn old_descriptions_of_presets_read_back_as_the_presets() {
        for (name, json) in OLD {
            assert!(is_legacy(json), "{name}");
            let got = to_spec(json).unwrap();
            assert_eq!(got, spec::preset(name).unwrap(), "{name}");
            assert_eq!(
                got.param_shapes(),
                spec::preset(name).unwrap().param_shapes()
            );
        }
    }

    #[test]
    fn old_multi_layer_descriptions_without_adjoint_mean_consistent() {
        let json = OLD[3].1.replace(r#","adjoint":"authors""#, "");
        let got = to_spec(&json).unwrap();
        assert_eq!(got.adjoint, AdjointForm::Consistent);
        let mut want = spec::preset("alexnet-f").unwrap();
        want.adjoint = AdjointForm::Consistent;
        assert_eq!(got, want);
    }

    #[test]
    fn bare_single_layer_configs_and_renamed_models_convert() {
        // The oldest checkpoints held a NetConfig without the "kind" tag.
        let bare = OLD[0].1.replace(r#""kind":"Single","#, "");
        assert!(is_legacy(&bare));
        assert_eq!(to_spec(&bare).unwrap(), spec::preset("fc400").unwrap());
        // A model of its own name keeps its architecture and gets default training settings.
        let own = OLD[0]
            .1
            .replace("\"fc400\"", "\"fc40\"")
            .replace("400}", "40}");
        let s = to_spec(&own).unwrap();
        assert_eq!((s.name.as_str(), s.neurons()), ("fc40", 40));
        s.validate().unwrap();
        // Not legacy: a model file's JSON.
        let now = serde_json::to_string(&spec::preset("fc400").unwrap()).unwrap();
        assert!(!is_legacy(&now));
        assert!(to_spec(r#"{"kind":"Single","preset":3}"#).is_err());
    }
}
