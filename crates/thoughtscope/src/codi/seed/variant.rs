//! The two variants of the seed's experiment: faithful (CoT_Exploration's ablation hook and
//! attention key slice, bugs included) and corrected. `run-all` runs both into sibling folders.

use serde::{Deserialize, Serialize};

use super::ablation::AblationMode;
use super::eot_attention::KeySelection;

/// Which variants `run-all` computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    Faithful,
    Corrected,
}
crate::model::named_values!(Variant, "variant", { Faithful => "faithful", Corrected => "corrected" });

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Faithful => "faithful",
            Variant::Corrected => "corrected",
        }
    }
    /// The ablation hook and attention key slice of this variant.
    pub fn modes(self) -> (AblationMode, KeySelection) {
        match self {
            Variant::Faithful => (AblationMode::Faithful, KeySelection::Faithful),
            Variant::Corrected => (AblationMode::Corrected, KeySelection::Corrected),
        }
    }
}
