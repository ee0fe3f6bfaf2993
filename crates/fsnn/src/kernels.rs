//! Which kernels the forward simulation runs: dense products on 0/1 spike tensors, or the
//! event-driven kernels that add weight rows for the spikes only (`ops::fc_event_sim`,
//! `ops::conv_event_sim`). Both give the same spikes; which is faster depends on the adapter, so
//! `Auto` measures both once per adapter, driver and shape and remembers the answer on disk.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernels {
    Dense,
    Event,
    Auto,
}

impl FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dense" => Ok(Kernels::Dense),
            "event" => Ok(Kernels::Event),
            "auto" => Ok(Kernels::Auto),
            _ => Err(format!("unknown kernels {s:?} (dense | event | auto)")),
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kernels::Dense => "dense",
            Kernels::Event => "event",
            Kernels::Auto => "auto",
        })
    }
}
