//! Structural work: bottlenecks (knelpunten) signalled to other services, the authorities and
//! the public. Subject `signals/<signal id>`. Organisational, about no client.

use super::{DataError, EventPayload, check_distinct, check_free_text};
use crate::reference::{Authority, LifeDomain, TargetGroup, code_list};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

code_list! {
    /// Whom a bottleneck is signalled to.
    SignalAddressee {
        /// Other services.
        Services = "services": ("Andere diensten", "Autres services", "Other services"),
        /// The authorities.
        Authority = "authority": ("Overheid", "Autorités", "Authorities"),
        /// The public.
        Public = "public": ("Publiek", "Public", "The public"),
    }
}

/// A bottleneck was signalled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BottleneckSignalled {
    /// The life domain of the bottleneck.
    pub life_domain: LifeDomain,
    /// Whom it is signalled to (at least one, no repeats).
    pub addressed_to: Vec<SignalAddressee>,
    /// Which authority, when addressed to the authorities.
    #[serde(default)]
    pub authority: Option<Authority>,
    /// The target group most affected, if one is.
    #[serde(default)]
    pub target_group: Option<TargetGroup>,
    /// The bottleneck, described organisationally in at most 500 characters. Classed
    /// statistical (kept in the clear, shown to the other services): it must not name or
    /// describe a person.
    pub description: String,
}

impl EventPayload for BottleneckSignalled {
    fn example() -> Self {
        Self {
            life_domain: LifeDomain::ResidenceStatus,
            addressed_to: vec![SignalAddressee::Services, SignalAddressee::Authority],
            authority: Some(Authority::Cocom),
            target_group: Some(TargetGroup::Convicts),
            description: "Gedetineerden zonder geldig verblijfsdocument kunnen bij vrijlating geen OCMW-steun \
                          aanvragen; geen vaste contactpersoon bij de Dienst Vreemdelingenzaken."
                .into(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_distinct("addressed_to", &self.addressed_to, 1)?;
        if self.authority.is_some() && !self.addressed_to.contains(&SignalAddressee::Authority) {
            return Err(DataError::at("authority", "only when the signal is addressed to the authorities"));
        }
        if self.description.trim().is_empty() {
            return Err(DataError::at("description", "required"));
        }
        check_free_text("description", Some(&self.description))
    }
}
