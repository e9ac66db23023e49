//! `POST /v1/events`: CloudEvents in, stored once in the log, answered with their sequences.

use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::Utc;
use rand::RngCore;
use relais_domain::OrgId;
use relais_domain::envelope::Envelope;
use relais_domain::seal;
use relais_domain::{StoredEvent, events::PersonalFields};
use relais_eventlog::{AppendError, Outgoing, subjects};
use relais_projections::{ClientKeys, KeyError, Role, ledger};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// Media type of one CloudEvent in structured mode.
pub const SINGLE: &str = "application/cloudevents+json";
/// Media type of a batch of CloudEvents.
pub const BATCH: &str = "application/cloudevents-batch+json";

#[derive(Serialize)]
struct Stored {
    id: Uuid,
    sequence: u64,
    duplicate: bool,
}

#[derive(Serialize)]
struct Answer {
    events: Vec<Stored>,
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim().to_ascii_lowercase())
}

/// Why a body could not be read: past the limit (413), or cut off or malformed on the way
/// (400: the client may retry; nothing was stored).
fn unread_body(error: &axum::Error, limit: usize) -> ApiError {
    let over_limit = std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |e| e.source())
        .any(|e| e.is::<http_body_util::LengthLimitError>());
    if over_limit {
        ApiError::too_large(format!("the body is limited to {limit} bytes"))
    } else {
        ApiError::invalid("", format!("the body could not be read to its end: {error}"))
    }
}

/// Publishes one event or an all-or-nothing batch.
#[tracing::instrument(name = "ingest", skip_all, fields(org = %auth.0.org, events = tracing::field::Empty))]
pub async fn post_events(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = &auth.0;
    if principal.role != Role::Org {
        return Err(ApiError::forbidden(format!("role {} cannot publish events", principal.role.as_str())));
    }
    let batch = match media_type(&headers).as_deref() {
        Some(SINGLE) => false,
        Some(BATCH) => true,
        _ => return Err(ApiError::unsupported_media_type(format!("send {SINGLE} or {BATCH}"))),
    };
    let limit = state.settings.max_body_bytes;
    let body: Bytes = axum::body::to_bytes(body, limit).await.map_err(|e| unread_body(&e, limit))?;
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::invalid("", format!("not JSON: {e}")))?;
    let items: Vec<(String, serde_json::Value)> = if batch {
        let serde_json::Value::Array(items) = value else {
            return Err(ApiError::invalid("", "a batch is a JSON array of CloudEvents"));
        };
        if items.is_empty() {
            return Err(ApiError::invalid("", "a batch holds at least one event"));
        }
        if items.len() > state.settings.max_batch_events {
            return Err(ApiError::too_large(format!(
                "a batch holds at most {} events",
                state.settings.max_batch_events
            )));
        }
        items.into_iter().enumerate().map(|(i, v)| (format!("/{i}"), v)).collect()
    } else {
        vec![(String::new(), value)]
    };
    tracing::Span::current().record("events", items.len());

    // Parse and check everything before anything is stored.
    let now = Utc::now();
    let actor = format!("token:{}", principal.token_id);
    let mut parsed: Vec<(String, Envelope, Option<u64>)> = Vec::with_capacity(items.len());
    let mut ids = HashSet::new();
    let mut expected_subjects = HashSet::new();
    let mut seen_subjects = HashSet::new();
    for (prefix, item) in items {
        // The source is checked first: a forged source is refused as such, whatever else.
        let source = item.get("source").and_then(|s| s.as_str()).unwrap_or_default();
        if source.starts_with("/orgs/") && source != format!("/orgs/{}", principal.org) {
            return Err(ApiError::wrong_source(
                format!("{prefix}/source"),
                format!("this token publishes only as /orgs/{}", principal.org),
            ));
        }
        let (envelope, expected) = Envelope::from_cloud_event(item, now, &actor).map_err(|e| match e {
            relais_domain::EnvelopeError::Invalid { pointer, detail } => {
                ApiError::invalid(format!("{prefix}{pointer}"), detail)
            }
            other => ApiError::invalid(prefix.clone(), other.to_string()),
        })?;
        if envelope.data.spec().category == relais_domain::events::Category::Privacy {
            return Err(ApiError::invalid(
                format!("{prefix}/type"),
                "Relais records erasures itself: request one at POST /v1/orgs/{org}/clients/{client}/erasure",
            ));
        }
        if !ids.insert(envelope.id) {
            return Err(ApiError::invalid(format!("{prefix}/id"), "the same id appears twice in the batch"));
        }
        let subject = envelope.subject.to_string();
        if expected.is_some() && (seen_subjects.contains(&subject) || !expected_subjects.insert(subject.clone())) {
            return Err(ApiError::invalid(
                format!("{prefix}/expectedversion"),
                "expectedversion may be given only on the first event of a subject in a batch",
            ));
        }
        seen_subjects.insert(subject);
        parsed.push((prefix, envelope, expected));
    }

    // Three independent lookups, at once: organisations named by the events (they must be in
    // the registry), ids the log already holds (idempotency beyond the broker's window:
    // answered as duplicates with their original sequence), and the clients' stored data
    // keys. Missing keys are created after: a batch these checks refuse creates none (one
    // refused later, for an erased client's event or by the broker, may leave its new
    // clients' keys, which nothing reads).
    let registry_check = async {
        let named: Vec<(String, String)> = parsed
            .iter()
            .flat_map(|(prefix, e, _)| {
                e.data
                    .organisations()
                    .into_iter()
                    .map(move |(pointer, org)| (format!("{prefix}/data{pointer}"), org.to_string()))
            })
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = named.iter().map(|(_, org)| org.clone()).collect();
        let known = relais_projections::registry::known(state.db.pool(), &ids).await?;
        match named.iter().find(|(_, org)| !known.contains(org)) {
            Some((pointer, org)) => {
                Err(ApiError::invalid(pointer.clone(), format!("no organisation {org:?} in the registry")))
            }
            None => Ok(()),
        }
    };
    let all_ids: Vec<Uuid> = parsed.iter().map(|(_, e, _)| e.id).collect();
    let ledger_lookup = async { ledger::find(state.db.pool(), &all_ids).await.map_err(ApiError::from) };
    // Every event is the principal's organisation's: its source was checked above.
    let org = &principal.org;
    let refs: Vec<&str> = parsed.iter().filter_map(|(_, e, _)| e.data.client_ref()).collect();
    let keys_lookup = async { state.keys.find_client_keys(org, &refs).await.map_err(|e| ApiError::internal(&e)) };
    let ((), known, mut keys) = tokio::try_join!(registry_check, ledger_lookup, keys_lookup)?;
    if let Some((prefix, _, _)) =
        parsed.iter().find(|(_, e, _)| known.get(&e.id).is_some_and(|r| r.org != org.as_str()))
    {
        return Err(ApiError::id_taken(format!("{prefix}/id")));
    }
    let fresh: Vec<&(String, Envelope, Option<u64>)> =
        parsed.iter().filter(|(_, e, _)| !known.contains_key(&e.id)).collect();
    // Ids Relais derives (an erasure's, from its key) are not for new events.
    for (prefix, e, _) in &fresh {
        if let Err(relais_domain::EnvelopeError::Invalid { pointer, detail }) = e.check_id() {
            return Err(ApiError::invalid(format!("{prefix}{pointer}"), detail));
        }
    }
    let fresh_refs: Vec<&str> = fresh.iter().filter_map(|(_, e, _)| e.data.client_ref()).collect();
    state.keys.create_missing_keys(org, &fresh_refs, &mut keys).await.map_err(|e| ApiError::internal(&e))?;
    let outgoing = seal_all(&fresh, &keys)?;
    let appended = append_resolving_duplicates(&state, outgoing, org, &fresh).await?;

    let mut answer = Vec::with_capacity(parsed.len());
    let (mut new_ids, mut new_seqs) = (Vec::new(), Vec::new());
    for (_, e, _) in &parsed {
        let (sequence, duplicate) = match known.get(&e.id) {
            Some(recorded) => (recorded.sequence, true),
            None => match appended.get(&e.id) {
                Some(a) => {
                    if !a.duplicate {
                        new_ids.push(e.id);
                        new_seqs.push(a.sequence as i64);
                    }
                    (a.sequence, a.duplicate)
                }
                None => return Err(ApiError::internal(&"an appended event has no acknowledgement")),
            },
        };
        answer.push(Stored { id: e.id, sequence, duplicate });
    }
    // The validator records these too; recording now closes the gap for retries that come
    // before the validator judged the events. Off the answer path: the broker's duplicate
    // window covers a retry in the meantime (and, for an event with an expected version, the
    // look along its subject after a conflict).
    if !new_ids.is_empty() {
        let orgs = vec![principal.org.to_string(); new_ids.len()];
        let pool = state.db.pool().clone();
        tokio::spawn(
            async move {
                if let Err(e) = ledger::record_early(&pool, &new_ids, &new_seqs, &orgs).await {
                    tracing::warn!(error = %e, "ledger not updated; the validator will record these ids");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
    let status = if answer.iter().all(|s| s.duplicate) { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(Answer { events: answer })).into_response())
}

/// Seals personal fields with each client's data key and encodes the stored bytes.
fn seal_all(events: &[&(String, Envelope, Option<u64>)], keys: &ClientKeys) -> Result<Vec<Outgoing>, ApiError> {
    let trace_headers = relais_eventlog::trace::current_headers();
    let mut out = Vec::with_capacity(events.len());
    for (prefix, envelope, expected) in events {
        let (mut stored, personal): (_, PersonalFields) = envelope.split_for_storage();
        if !personal.is_empty() {
            let client_ref = envelope
                .data
                .client_ref()
                .ok_or_else(|| ApiError::internal(&"an event type with personal fields has no client_ref"))?;
            let (key_id, key) = match keys.get(client_ref) {
                Some(Ok(k)) => k.clone(),
                Some(Err(KeyError::ClientErased)) => {
                    return Err(ApiError::client_erased(format!("{prefix}/data/client_ref")));
                }
                Some(Err(other)) => return Err(ApiError::internal(other)),
                None => return Err(ApiError::internal(&"no data key was looked up for a client")),
            };
            let mut nonce = [0u8; 24];
            rand::rng().fill_bytes(&mut nonce);
            stored.sealed = Some(seal::seal(&key, key_id, envelope.id, nonce, &personal));
        }
        out.push(Outgoing {
            subject: subjects::event_subject(&envelope.org, &envelope.subject),
            event_id: envelope.id,
            event_type: envelope.data.event_type(),
            schema_version: envelope.data.spec().version,
            payload: Bytes::from(StoredEvent::V1(stored).encode()),
            expected_last_subject_sequence: *expected,
            trace_headers: trace_headers.clone(),
        });
    }
    Ok(out)
}

/// Appends, and when the broker refuses a batch because an id in it is already stored (a
/// concurrent or direct publish within its window), waits for the ledger to learn those ids,
/// answers them as duplicates and appends the rest. An id stored by another organisation is
/// refused before anything of the batch is stored (`events`: the events appended, with their
/// JSON pointers, looked up only then).
async fn append_resolving_duplicates(
    state: &AppState,
    mut outgoing: Vec<Outgoing>,
    org: &OrgId,
    events: &[&(String, Envelope, Option<u64>)],
) -> Result<HashMap<Uuid, relais_eventlog::Appended>, ApiError> {
    let id_taken = |id: &Uuid| {
        let prefix = events.iter().find(|(_, e, _)| e.id == *id).map(|(prefix, _, _)| prefix.as_str());
        ApiError::id_taken(format!("{}/id", prefix.unwrap_or_default()))
    };
    let mut result = HashMap::new();
    for attempt in 0..20 {
        if outgoing.is_empty() {
            return Ok(result);
        }
        match state.log.append(&outgoing).await {
            Ok(appended) => {
                for (o, a) in outgoing.iter().zip(appended) {
                    // Only a single publish is acknowledged as a duplicate, of whichever copy
                    // the broker's window holds: its subject tells whose it is.
                    if a.duplicate && stored_owner(state, a.sequence, o.event_id).await?.as_ref() != Some(org) {
                        return Err(id_taken(&o.event_id));
                    }
                    result.insert(o.event_id, a);
                }
                return Ok(result);
            }
            Err(AppendError::DuplicateInBatch) => {
                let ids: Vec<Uuid> = outgoing.iter().map(|o| o.event_id).collect();
                let mut known = ledger::find(state.db.pool(), &ids).await?;
                // An id the broker holds may not be judged yet (wait for the validator), or be
                // held by a message the ledger does not name: one whose message id is not its
                // payload's id, quarantined as `message-id-mismatch`; the quarantine names it.
                let unknown: Vec<Uuid> = ids.iter().filter(|id| !known.contains_key(id)).copied().collect();
                if !unknown.is_empty() {
                    known.extend(relais_projections::quarantine::first_sequences(state.db.pool(), &unknown).await?);
                }
                if let Some((id, _)) = known.iter().find(|(_, r)| r.org != org.as_str()) {
                    return Err(id_taken(id));
                }
                for (id, recorded) in &known {
                    result.insert(*id, relais_eventlog::Appended { sequence: recorded.sequence, duplicate: true });
                }
                outgoing.retain(|o| !known.contains_key(&o.event_id));
                if known.is_empty() {
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1).min(5))).await;
                }
            }
            Err(AppendError::Conflict(detail)) => {
                let stored = stored_despite_conflict(state, &outgoing).await?;
                if stored.is_empty() {
                    return Err(ApiError::version_conflict(detail));
                }
                for (id, sequence) in &stored {
                    result.insert(*id, relais_eventlog::Appended { sequence: *sequence, duplicate: true });
                }
                outgoing.retain(|o| !stored.contains_key(&o.event_id));
            }
            Err(AppendError::TooLarge) => return Err(ApiError::too_large("the batch is larger than the log accepts")),
            Err(AppendError::Unavailable(detail)) => {
                tracing::error!(%detail, "event log unavailable");
                return Err(ApiError::unavailable(
                    "the event log did not confirm the events, which may or may not be stored; \
                     retry with the same ids: each event is stored once",
                ));
            }
            Err(AppendError::Busy(detail)) => {
                tracing::warn!(%detail, "event log busy");
                return Err(ApiError::unavailable(
                    "the event log could not take the batch now; nothing was stored, retry with the same ids",
                ));
            }
            Err(e @ AppendError::Rejected { .. }) => return Err(ApiError::internal(&e)),
        }
    }
    Err(ApiError::unavailable("an id of the batch is being stored concurrently; retry with the same ids"))
}

/// The organisation whose event `id` is the message at `sequence`: `None` when it is on no
/// event subject or holds no event with that id (a direct publisher's message id naming
/// another id than its payload's, which the validator quarantines as `message-id-mismatch`).
async fn stored_owner(state: &AppState, sequence: u64, id: Uuid) -> Result<Option<OrgId>, ApiError> {
    let message = relais_eventlog::reader::message_at(&state.stream, sequence).await.map_err(|e| {
        tracing::error!(error = %e, "event log unavailable");
        ApiError::unavailable("the event log could not be read; retry with the same ids")
    })?;
    Ok(message
        .filter(|m| relais_domain::StoredEvent::decode(&m.payload).is_ok_and(|e| e.v1().id == id))
        .and_then(|m| subjects::parse_event_subject(&m.subject))
        .map(|(org, _)| org))
}

/// The events with an expected version that are already stored on their subject after that
/// version: retries of events whose first attempt was stored (its answer lost) before the
/// validator recorded their ids. The broker checks the expected version of a single publish
/// before its message id, so it refuses such a retry as a conflict; it is a duplicate.
async fn stored_despite_conflict(state: &AppState, outgoing: &[Outgoing]) -> Result<HashMap<Uuid, u64>, ApiError> {
    // A client this far behind its subject gets the conflict.
    const LOOK_AHEAD: usize = 100;
    let mut stored = HashMap::new();
    for o in outgoing {
        let Some(expected) = o.expected_last_subject_sequence else { continue };
        let id = o.event_id.to_string();
        let found =
            relais_eventlog::reader::find_on_subject_after(&state.stream, &o.subject, expected, &id, LOOK_AHEAD)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "event log unavailable");
                    ApiError::unavailable("the event log could not be read; retry with the same ids")
                })?;
        if let Some(sequence) = found {
            stored.insert(o.event_id, sequence);
        }
    }
    Ok(stored)
}
