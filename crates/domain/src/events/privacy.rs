//! Privacy operations recorded in the log. They hold no personal data.

use super::EventPayload;
use crate::reference::code_list;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

code_list! {
    /// Why a client was erased.
    ErasureReason {
        /// The client asked (GDPR Art. 17).
        ClientRequest = "client_request": ("Op vraag van de cliënt", "À la demande du client", "At the client's request"),
        /// The retention period after closure ran out.
        RetentionExpired = "retention_expired": ("Bewaartermijn verstreken", "Délai de conservation expiré", "Retention period expired"),
    }
}

/// A client's data key was destroyed: everything personal the client's events said is gone.
/// The subject is `clients/<key id>`; the event names no case and no client reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientErased {
    /// Why.
    pub reason: ErasureReason,
}

impl EventPayload for ClientErased {
    fn example() -> Self {
        Self { reason: ErasureReason::ClientRequest }
    }
}
