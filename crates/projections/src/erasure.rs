//! Erasing a client by crypto-shredding: the client's data key is destroyed, and the erasure is
//! recorded in the log as `relais.client.erased` (subject `clients/<key id>`, data: the reason),
//! an event that holds no personal data. The log itself is never rewritten: the client's
//! events stay, with their statistical facts readable and their personal fields sealed with a
//! key that no longer exists.
//!
//! The HTTP endpoint, the command line and the retention sweep all erase through
//! [`Eraser`]. An erasure is idempotent: the event id is derived from the key id, so a retried
//! or concurrent erasure stores one event, and an erasure interrupted between destroying the
//! key and recording the event is completed by the next attempt.

use crate::keys::{KeyError, KeyStore};
use crate::ledger;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use relais_domain::envelope::{Envelope, PersonalState};
use relais_domain::events::{ClientErased, ErasureReason, EventData};
use relais_domain::reference::CodeList;
use relais_domain::{AggregateKind, AggregateRef, OrgId, StoredEvent};
use relais_eventlog::{AppendError, EventLog, Outgoing, subjects};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// Why a client could not be erased.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// The organisation has no such client (never seen, or another organisation's): 404.
    #[error("the organisation has no such client")]
    UnknownClient,
    /// The key store failed; nothing or only the key destruction happened. Retry.
    #[error("key store: {0}")]
    Keys(#[from] KeyError),
    /// The erasure event could not be recorded; the key may already be destroyed. Retry: the
    /// retry records the event once.
    #[error("event log: {0}")]
    Log(#[from] AppendError),
    /// The database failed. Retry.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The log could not be read. Retry.
    #[error("event log: {0}")]
    Read(relais_eventlog::reader::ReadError),
    /// The key is destroyed, but the broker holds a message with the erasure event's id at
    /// this sequence that the validator did not record as the erasure within a few seconds:
    /// one forged by publishing straight to the log, or one not judged yet (the projector
    /// behind or down). The event stays owed.
    /// Retry: once judged, or past the broker's duplicate window, the retry records it.
    #[error("the erasure event's id is held at sequence {0} by a message not recorded as the erasure yet")]
    EventPending(u64),
}

/// A completed erasure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Erasure {
    /// The client's (destroyed) data key id: the subject of the erasure event.
    pub key_id: Uuid,
    /// The organisation.
    pub org: String,
    /// When the key was destroyed.
    pub erased_at: DateTime<Utc>,
    /// The id of the `relais.client.erased` event.
    pub event_id: Uuid,
    /// Its stream sequence.
    pub sequence: u64,
    /// False if the client had been erased completely before (key destroyed and event
    /// recorded): nothing changed.
    pub newly_erased: bool,
}

/// The id of the erasure event of a key: derived from the key id, so every attempt to erase
/// the same client names the same event (a UUID of version 8, from SHA-256).
pub fn erasure_event_id(key_id: Uuid) -> Uuid {
    let digest = Sha256::new().chain_update(b"relais.client.erased\0").chain_update(key_id.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// Erases clients: destroys keys and records erasures in the log.
#[derive(Clone)]
pub struct Eraser {
    keys: KeyStore,
    log: EventLog,
    pool: PgPool,
}

impl Eraser {
    /// An eraser over the key store, the log and the database.
    pub fn new(keys: KeyStore, log: EventLog, pool: PgPool) -> Self {
        Self { keys, log, pool }
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Appends the erasure events that erasures owe: keys destroyed whose event could not be
    /// appended then (the log was down, the caller gave up), each with its erasure's own
    /// reason and actor. Returns the erasures whose event it appended. Until its event is in
    /// the log, the views keep what they showed of the client. The retention sweep runs this
    /// first.
    #[tracing::instrument(name = "privacy.finish_owed_erasures", skip_all)]
    pub async fn finish_owed(&self) -> Result<Vec<Erasure>, ErasureError> {
        let owed: Vec<(Uuid, String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT key_id, org_id, erasure_reason, erasure_actor FROM client_keys
             WHERE erased_at IS NOT NULL AND erasure_seq IS NULL ORDER BY erased_at, key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut done = Vec::with_capacity(owed.len());
        for (key_id, org, reason, actor) in owed {
            let org = OrgId::parse(&org).map_err(|_| ErasureError::UnknownClient)?;
            // Keys erased before reasons were kept: an erasure the client asked for, unless
            // the ledger already holds its event (then the reason is not used).
            let reason = reason
                .and_then(|code| ErasureReason::ALL.iter().copied().find(|r| r.code() == code))
                .unwrap_or(ErasureReason::ClientRequest);
            let actor = actor.unwrap_or_else(|| "relais:erasure".to_owned());
            let erasure = match self.erase_key(&org, key_id, reason, &actor).await {
                Ok(erasure) => erasure,
                // Owed a while longer; the others are not held up.
                Err(ErasureError::EventPending(sequence)) => {
                    tracing::warn!(%key_id, sequence, "erasure event still owed");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Keys erased before the reason was kept mostly have their event already: found
            // in the ledger, they are only marked, not counted.
            if erasure.newly_erased {
                done.push(erasure);
            }
        }
        if !done.is_empty() {
            tracing::info!(completed = done.len(), "owed erasure events appended");
        }
        Ok(done)
    }

    /// Where the validator records the erasure once it judged the message at `sequence`, which
    /// holds the erasure's id: usually this erasure's own earlier attempt (an acknowledgement
    /// lost, a concurrent call), judged within milliseconds, at `sequence` or, if that was a
    /// later copy, at the first. Only an accepted erasure of this key takes the id (version 8
    /// is reserved). `None` once the message is quarantined with no copy recorded, or after a
    /// few seconds without a verdict.
    async fn judged_as_erasure(&self, event_id: Uuid, sequence: u64) -> Result<Option<u64>, sqlx::Error> {
        for _ in 0..30 {
            let (held, quarantined): (Option<i64>, bool) = sqlx::query_as(
                "SELECT (SELECT seq FROM event_ledger WHERE event_id = $1),
                        EXISTS (SELECT 1 FROM quarantine WHERE seq = $2)",
            )
            .bind(event_id)
            .bind(sequence as i64)
            .fetch_one(&self.pool)
            .await?;
            if let Some(first) = held {
                return Ok(Some(first as u64));
            }
            if quarantined {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(None)
    }

    async fn mark_recorded(&self, key_id: Uuid, sequence: u64) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE client_keys SET erasure_seq = $2 WHERE key_id = $1 AND erasure_seq IS NULL")
            .bind(key_id)
            .bind(sequence as i64)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Erases the client `client_ref` of `org`. `actor` is recorded in the erasure event (a
    /// token id, `retention`, an operator); it must not be personal data.
    #[tracing::instrument(name = "privacy.erase_client", skip_all, fields(org = %org))]
    pub async fn erase_client(
        &self,
        org: &OrgId,
        client_ref: &str,
        reason: ErasureReason,
        actor: &str,
    ) -> Result<Erasure, ErasureError> {
        let info = self.keys.client_info(org, client_ref).await?.ok_or(ErasureError::UnknownClient)?;
        self.erase_key(org, info.key_id, reason, actor).await
    }

    /// Erases the client whose data key is `key_id`, which must belong to `org`.
    #[tracing::instrument(name = "privacy.erase_key", skip_all, fields(org = %org, key_id = %key_id))]
    pub async fn erase_key(
        &self,
        org: &OrgId,
        key_id: Uuid,
        reason: ErasureReason,
        actor: &str,
    ) -> Result<Erasure, ErasureError> {
        match self.keys.key_info(key_id).await? {
            Some(info) if info.org == org.as_str() => {}
            _ => return Err(ErasureError::UnknownClient),
        }
        let destroyed = self.keys.erase_key(key_id, reason.code(), actor).await?.ok_or(ErasureError::UnknownClient)?;
        let event_id = erasure_event_id(key_id);
        if let Some(seq) = ledger::find(&self.pool, &[event_id]).await?.get(&event_id).map(|r| r.sequence) {
            self.mark_recorded(key_id, seq).await?;
            return Ok(Erasure {
                key_id,
                org: org.to_string(),
                erased_at: destroyed.erased_at,
                event_id,
                sequence: seq,
                newly_erased: destroyed.newly_erased,
            });
        }
        // A key destroyed earlier (its event still owed) keeps that erasure's reason and actor:
        // the event records the erasure that happened, not this later call.
        let reason = destroyed
            .reason
            .as_deref()
            .and_then(|code| ErasureReason::ALL.iter().copied().find(|r| r.code() == code))
            .unwrap_or(reason);
        let actor = destroyed.actor.as_deref().unwrap_or(actor);
        let subject =
            AggregateRef::new(AggregateKind::Clients, &key_id.to_string()).map_err(|_| ErasureError::UnknownClient)?;
        let envelope = Envelope {
            id: event_id,
            org: org.clone(),
            subject,
            occurred_at: destroyed.erased_at,
            recorded_at: Utc::now(),
            actor: actor.to_owned(),
            correlation_id: None,
            causation_id: None,
            data: EventData::ClientErased(ClientErased { reason }),
            personal: PersonalState::Present,
        };
        let (stored, _no_personal_fields) = envelope.split_for_storage();
        let outgoing = Outgoing {
            subject: subjects::event_subject(&envelope.org, &envelope.subject),
            event_id,
            event_type: envelope.data.event_type(),
            schema_version: envelope.data.spec().version,
            payload: Bytes::from(StoredEvent::V1(stored).encode()),
            expected_last_subject_sequence: None,
            trace_headers: relais_eventlog::trace::current_headers(),
        };
        let appended = self.log.append(std::slice::from_ref(&outgoing)).await?;
        let Some(appended) = appended.first().copied() else {
            return Err(AppendError::Unavailable("no acknowledgement for the erasure event".into()).into());
        };
        let sequence = if !appended.duplicate {
            // The validator records it too; recording now lets a retry find it at once.
            let mut conn = self.pool.acquire().await?;
            ledger::record(&mut conn, &[event_id], &[appended.sequence as i64], &[org.to_string()]).await?;
            appended.sequence
        } else if let Some(first) = self.judged_as_erasure(event_id, appended.sequence).await? {
            // The erasure is where the ledger puts its first copy (the duplicate named by the
            // broker may be a later copy, judged a duplicate of it).
            first
        } else {
            // The broker holds a message with this id that the validator did not record as the
            // erasure: one forged by publishing straight to the log (the id derives from the
            // key), quarantined, or one not judged in time (the projector is behind or down).
            // The event stays owed: the next erasure call or sweep finds it in the ledger, or,
            // past the broker's window, appends it.
            tracing::warn!(sequence = appended.sequence, "erasure event held by an unjudged or quarantined message");
            return Err(ErasureError::EventPending(appended.sequence));
        };
        self.mark_recorded(key_id, sequence).await?;
        tracing::info!(sequence, newly = destroyed.newly_erased, "client erased");
        Ok(Erasure {
            key_id,
            org: org.to_string(),
            erased_at: destroyed.erased_at,
            event_id,
            sequence,
            newly_erased: destroyed.newly_erased || !appended.duplicate,
        })
    }
}

/// Checks erasure events for the validator: an erasure event is accepted only when Relais
/// appended it (a valid gateway admission tag under `admission`, as [`erasures_in_log`]
/// requires), under the id its key gives it, and the key it names belongs to its organisation
/// and is destroyed. So an event published directly cannot announce an erasure, and the
/// verdict does not depend on when the validator meets the event: Relais destroys a key before
/// it appends the key's erasure, so a tagged erasure always finds its key destroyed, while an
/// untagged one is refused before or after the destruction alike. Returns, per index (the
/// first of each triple) that fails, why.
pub(crate) async fn judge_erasures(
    pool: &PgPool,
    admission: &relais_audit::AdmissionKey,
    events: &[(usize, &relais_eventlog::reader::LogMessage, &Envelope)],
) -> Result<HashMap<usize, String>, sqlx::Error> {
    let mut refused = HashMap::new();
    let mut named: Vec<(usize, Uuid, &OrgId)> = Vec::new();
    for (i, m, e) in events {
        if !matches!(e.data, EventData::ClientErased(_)) {
            continue;
        }
        match Uuid::parse_str(e.subject.id()) {
            // Its id is its key's: an erase call finds the erasure by it (`erase_key`).
            Ok(key_id) if e.id != erasure_event_id(key_id) => {
                let expected = erasure_event_id(key_id);
                refused.insert(*i, format!("an erasure of data key {key_id} has id {expected}, not {}", e.id));
            }
            Ok(key_id)
                if admission.check(m.admission.as_deref(), &m.subject, &m.payload)
                    != relais_audit::Admission::Gateway =>
            {
                refused.insert(
                    *i,
                    format!(
                        "the erasure of data key {key_id} has no valid admission tag of Relais: erase through Relais"
                    ),
                );
            }
            Ok(key_id) => named.push((*i, key_id, &e.org)),
            Err(_) => {
                refused.insert(*i, "the subject of an erasure names a data key id (clients/<uuid>)".to_owned());
            }
        }
    }
    if named.is_empty() {
        return Ok(refused);
    }
    let ids: Vec<Uuid> = named.iter().map(|(_, k, _)| *k).collect();
    let rows: Vec<(Uuid, String, bool)> =
        sqlx::query_as("SELECT key_id, org_id, erased_at IS NOT NULL FROM client_keys WHERE key_id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    let known: HashMap<Uuid, (String, bool)> = rows.into_iter().map(|(k, o, e)| (k, (o, e))).collect();
    for (i, key_id, org) in named {
        match known.get(&key_id) {
            Some((owner, true)) if owner == org.as_str() => {}
            Some((owner, false)) if owner == org.as_str() => {
                refused.insert(i, format!("data key {key_id} was not destroyed: erase through Relais"));
            }
            _ => {
                refused.insert(i, format!("data key {key_id} is not a key of {org}"));
            }
        }
    }
    Ok(refused)
}

/// An event sealed with a data key that is destroyed, as the validator meets it.
pub(crate) struct SealedWithErasedKey<'a> {
    /// Index of the event in the batch being judged.
    pub index: usize,
    /// Its sequence in the log.
    pub sequence: u64,
    /// The destroyed key.
    pub key_id: Uuid,
    /// The event's organisation.
    pub org: &'a OrgId,
}

/// Checks events sealed with a destroyed key for the validator. Such an event is admitted only
/// when it is the key's organisation's and the log holds it before the key's erasure event: it
/// was recorded while the client was a client, and only its statistical part will ever be
/// read. One stored after the erasure event is refused (`client-erased`), as the gateway
/// refuses it over HTTP: nothing new is recorded about an erased client, even by a system
/// that kept the key. The decision rests on positions in the log only, so a rebuild decides
/// the same. `erasures_in_batch` maps a key to the sequence of its erasure event when the
/// batch being judged holds it (the ledger does not yet). Returns, per index refused, why.
pub(crate) async fn judge_sealed_with_erased_keys(
    pool: &PgPool,
    uses: &[SealedWithErasedKey<'_>],
    erasures_in_batch: &HashMap<Uuid, u64>,
) -> Result<HashMap<usize, String>, sqlx::Error> {
    let mut refused = HashMap::new();
    if uses.is_empty() {
        return Ok(refused);
    }
    let mut keys: Vec<Uuid> = uses.iter().map(|u| u.key_id).collect();
    keys.sort_unstable();
    keys.dedup();
    let owners: HashMap<Uuid, String> =
        sqlx::query_as::<_, (Uuid, String)>("SELECT key_id, org_id FROM client_keys WHERE key_id = ANY($1)")
            .bind(&keys)
            .fetch_all(pool)
            .await?
            .into_iter()
            .collect();
    let event_ids: Vec<Uuid> = keys.iter().map(|k| erasure_event_id(*k)).collect();
    let logged = ledger::find(pool, &event_ids).await?;
    for u in uses {
        if owners.get(&u.key_id).is_none_or(|owner| owner != u.org.as_str()) {
            refused.insert(u.index, format!("data key {} is not a key of {}", u.key_id, u.org));
            continue;
        }
        let erased_at = erasures_in_batch
            .get(&u.key_id)
            .copied()
            .or_else(|| logged.get(&erasure_event_id(u.key_id)).map(|r| r.sequence));
        if let Some(erasure) = erased_at.filter(|s| *s < u.sequence) {
            refused.insert(
                u.index,
                format!(
                    "the client of data key {} was erased at sequence {erasure}: record nothing more about them",
                    u.key_id
                ),
            );
        }
    }
    Ok(refused)
}

/// An erasure the log records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedErasure {
    /// The destroyed key.
    pub key_id: Uuid,
    /// The organisation that erased.
    pub org: String,
    /// When the key was destroyed (the event's time).
    pub erased_at: DateTime<Utc>,
    /// The event's sequence.
    pub sequence: u64,
}

/// Every erasure recorded in the log, in order, read with one direct get per erasure event
/// (subjects `relais.ev.*.clients.*`): what a key store restore applies again. Only erasures
/// Relais itself appended count: on their own organisation's subject, with a valid gateway
/// admission tag (`admission`, the deployment's key). Erasures are never published by
/// organisations (the ingest endpoint refuses them, and one published directly is
/// quarantined), so a forged one, or one that names another organisation's key, is not
/// applied: a restore never destroys a key the log did not lawfully erase. The judgement
/// rests on the log alone, not on the quarantine, which a lost database does not hold.
pub async fn erasures_in_log(
    stream: &async_nats::jetstream::stream::Stream,
    admission: &relais_audit::AdmissionKey,
) -> Result<ErasuresInLog, ErasureError> {
    let filter = format!("{}.*.{}.*", subjects::PREFIX, AggregateKind::Clients.as_str());
    let mut out = Vec::new();
    let mut not_relais = 0;
    let mut bad_gateway_tags = 0;
    for m in relais_eventlog::reader::messages_matching(stream, &filter).await.map_err(ErasureError::Read)? {
        let Ok(stored) = StoredEvent::decode(&m.payload) else { continue };
        let Ok(envelope) = stored.v1().open(None) else { continue };
        if !matches!(envelope.data, EventData::ClientErased(_)) {
            continue;
        }
        let on_own_subject = subjects::parse_event_subject(&m.subject).is_some_and(|(org, _)| org == envelope.org);
        let admission = admission.check(m.admission.as_deref(), &m.subject, &m.payload);
        // A gateway tag that does not verify is most likely checked with the wrong key.
        if admission == relais_audit::Admission::Invalid
            && m.admission.as_deref().is_some_and(|t| t.starts_with("gateway:"))
        {
            bad_gateway_tags += 1;
        }
        let admitted = admission == relais_audit::Admission::Gateway;
        let Ok(key_id) = Uuid::parse_str(envelope.subject.id()) else { continue };
        if !(on_own_subject && admitted) {
            not_relais += 1;
            continue;
        }
        out.push(LoggedErasure {
            key_id,
            org: envelope.org.to_string(),
            erased_at: envelope.occurred_at,
            sequence: m.sequence,
        });
    }
    Ok(ErasuresInLog { erasures: out, not_relais, bad_gateway_tags })
}

/// What [`erasures_in_log`] found.
#[derive(Debug, Clone, Default)]
pub struct ErasuresInLog {
    /// The erasures Relais appended, in order.
    pub erasures: Vec<LoggedErasure>,
    /// Erasure messages not appended by Relais (no valid gateway tag, or another
    /// organisation's subject): not applied.
    pub not_relais: u64,
    /// Of those, messages with a gateway tag that does not verify: checked with another
    /// deployment's admission key, most likely. A restore must not go on (it would bring
    /// erased clients back).
    pub bad_gateway_tags: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_erasure_event_id_is_stable_per_key_and_differs_between_keys() {
        let a = Uuid::from_u128(1);
        assert_eq!(erasure_event_id(a), erasure_event_id(a));
        assert_ne!(erasure_event_id(a), erasure_event_id(Uuid::from_u128(2)));
        assert_eq!(erasure_event_id(a).get_version_num(), 8);
    }
}
