//! Small helpers the views share.

use crate::worker::Applied;
use relais_domain::envelope::PersonalState;
use relais_domain::events::EventData;
use relais_domain::reference::CodeList;
use uuid::Uuid;

/// The stored code of a code-list value.
pub(crate) fn code<T: CodeList>(v: T) -> String {
    v.code().to_owned()
}

/// The key ids of the clients erased in a batch (`relais.client.erased`, subject
/// `clients/<key id>`).
pub(crate) fn erased_key_ids(events: &[Applied]) -> Vec<Uuid> {
    events
        .iter()
        .filter(|e| matches!(e.envelope.data, EventData::ClientErased(_)))
        .filter_map(|e| Uuid::parse_str(e.envelope.subject.id()).ok())
        .collect()
}

/// The client reference of an event, when its personal fields are present.
pub(crate) fn client_ref(e: &Applied) -> Option<String> {
    if e.envelope.personal != PersonalState::Present {
        return None;
    }
    e.envelope.data.client_ref().filter(|c| !c.is_empty()).map(str::to_owned)
}

/// Sorted, distinct codes.
pub(crate) fn sorted_codes<'a>(codes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let set: std::collections::BTreeSet<&str> = codes.into_iter().collect();
    set.into_iter().map(str::to_owned).collect()
}
