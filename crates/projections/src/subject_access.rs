//! Subject access (GDPR Art. 15): everything one organisation holds about one of its clients,
//! in readable JSON: the client's events (CloudEvents with their data opened, each with its
//! type's title in NL/FR/EN), the caseload rows of the client's cases, and the access records
//! of who read any of it.
//!
//! The client's events are found through the client index ([`crate::client_events`]) and read
//! by sequence from the log, so an export does not scan the log. A key that is missing or does
//! not open an event never stops the export: the event is listed with its statistical facts,
//! and a problem names it.

use crate::access::AccessRecord;
use crate::caseload::{self, CaseRow};
use crate::client_events;
use crate::keys::{KeyError, KeyLookup, KeyStore};
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Utc};
use relais_domain::envelope::{Envelope, StoredEventV1};
use relais_domain::{AggregateKind, AggregateRef, OrgId, StoredEvent, seal};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Why an export could not be made (the request is answered 503 or 500; nothing is half
/// answered).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The key store's database failed.
    #[error(transparent)]
    Keys(KeyError),
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] relais_eventlog::reader::ReadError),
}

/// The client, as the export names them.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedClient {
    /// The organisation's reference of the client (absent once erased).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ref: Option<String>,
    /// The id of the client's data key.
    pub key_id: Uuid,
}

/// An event whose personal fields could not be read, named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportProblem {
    /// The event id, when the stored bytes could be read that far.
    pub event_id: Option<Uuid>,
    /// Its stream sequence.
    pub sequence: u64,
    /// What went wrong.
    pub problem: String,
}

/// Everything an organisation holds about a client.
#[derive(Debug, Clone, Serialize)]
pub struct ClientExport {
    /// The organisation (the controller).
    pub organisation: String,
    /// The client.
    pub client: ExportedClient,
    /// True once the client was erased: then nothing else is given.
    pub erased: bool,
    /// When the client was erased.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<DateTime<Utc>>,
    /// When this export was made.
    pub exported_at: DateTime<Utc>,
    /// The client's events, in the order of the log: CloudEvents with `sequence` and `titles`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Value>,
    /// The client's cases as the caseload shows them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<CaseRow>,
    /// Who read the client's data (cases, referrals, this client's exports and keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessRecord>,
    /// Events whose personal fields could not be read.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<ExportProblem>,
}

impl ClientExport {
    /// The answer for an erased client: the key id and the time of erasure, nothing more.
    pub fn erased(org: &OrgId, key_id: Uuid, erased_at: Option<DateTime<Utc>>) -> Self {
        Self {
            organisation: org.to_string(),
            client: ExportedClient { client_ref: None, key_id },
            erased: true,
            erased_at,
            exported_at: Utc::now(),
            events: Vec::new(),
            cases: Vec::new(),
            access: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// The resource name of a client in access records: by key id, never by reference.
pub fn client_resource(org: &OrgId, key_id: Uuid) -> String {
    format!("orgs/{org}/clients/{key_id}")
}

/// How the client's key reads their events.
enum Opener {
    Key(seal::DataKey),
    Unreadable(String),
}

/// Builds the export of a client that is not erased. `key_id` is the client's key.
#[tracing::instrument(name = "privacy.export", skip_all, fields(org = %org, key_id = %key_id))]
pub async fn export(
    pool: &PgPool,
    keys: &KeyStore,
    stream: &Stream,
    org: &OrgId,
    client_ref: &str,
    key_id: Uuid,
) -> Result<ClientExport, ExportError> {
    let opener = match keys.lookup(key_id).await {
        Ok(KeyLookup::Key(k)) => Opener::Key(k),
        Ok(KeyLookup::Erased) => {
            let erased_at = keys.key_info(key_id).await.map_err(ExportError::Keys)?.and_then(|i| i.erased_at);
            return Ok(ClientExport::erased(org, key_id, erased_at));
        }
        Ok(KeyLookup::Unknown) => Opener::Unreadable(format!("data key {key_id} is missing from the key store")),
        Ok(KeyLookup::Damaged) => {
            Opener::Unreadable(format!("data key {key_id} is damaged in the key store: restore it from a backup"))
        }
        Err(KeyError::Db(e)) => return Err(ExportError::Keys(KeyError::Db(e))),
        Err(e) => {
            tracing::error!(error = %e, "a client's data key cannot be unwrapped");
            Opener::Unreadable("the data key cannot be unwrapped: the key-encryption key is misconfigured".into())
        }
    };
    let indexed = client_events::of_client(pool, org.as_str(), key_id).await?;
    let mut events = Vec::with_capacity(indexed.len());
    let mut problems = Vec::new();
    let mut subjects = BTreeSet::new();
    for row in &indexed {
        let seq = row.seq as u64;
        subjects.insert(row.subject.clone());
        let Some(message) = relais_eventlog::reader::message_at(stream, seq).await? else {
            problems.push(ExportProblem {
                event_id: None,
                sequence: seq,
                problem: "no message at this sequence".into(),
            });
            continue;
        };
        let stored = match StoredEvent::decode(&message.payload) {
            Ok(s) => s.into_v1(),
            Err(e) => {
                problems.push(ExportProblem { event_id: None, sequence: seq, problem: e.to_string() });
                continue;
            }
        };
        match open_event(&stored, key_id, &opener) {
            Ok((mut envelope, problem)) => {
                if let Some(p) = problem {
                    envelope.personal = relais_domain::envelope::PersonalState::Unreadable;
                    problems.push(ExportProblem { event_id: Some(stored.id), sequence: seq, problem: p });
                }
                let mut ce = envelope.to_cloud_event();
                ce.insert("sequence".into(), seq.into());
                ce.insert("titles".into(), serde_json::to_value(envelope.data.spec().titles).unwrap_or(Value::Null));
                events.push(Value::Object(ce));
            }
            Err(problem) => problems.push(ExportProblem { event_id: Some(stored.id), sequence: seq, problem }),
        }
    }
    let mut cases = Vec::new();
    for subject in &subjects {
        if let Ok(s) = AggregateRef::parse(subject)
            && s.kind() == AggregateKind::Cases
            && let Some(row) = caseload::get(pool, org, s.id()).await?
        {
            cases.push(row);
        }
    }
    let exact: Vec<String> = subjects.iter().map(|s| format!("orgs/{org}/{s}")).collect();
    let mut prefixes: Vec<String> = exact.iter().map(|r| format!("{r}/")).collect();
    let own = client_resource(org, key_id);
    prefixes.push(format!("{own}/"));
    let mut exact = exact;
    exact.push(own);
    let access = accesses(pool, &exact, &prefixes).await?;
    Ok(ClientExport {
        organisation: org.to_string(),
        client: ExportedClient { client_ref: Some(client_ref.to_owned()), key_id },
        erased: false,
        erased_at: None,
        exported_at: Utc::now(),
        events,
        cases,
        access,
        problems,
    })
}

/// Opens one event of the client: the envelope, and a problem when its personal fields could
/// not be read (the envelope then holds its statistical facts only).
fn open_event(stored: &StoredEventV1, key_id: Uuid, opener: &Opener) -> Result<(Envelope, Option<String>), String> {
    let statistical = || stored.open(None).map_err(|e| e.to_string());
    let Some(sealed) = &stored.sealed else { return Ok((statistical()?, None)) };
    if sealed.key_id != key_id {
        return Ok((statistical()?, Some(format!("sealed with another data key ({})", sealed.key_id))));
    }
    match opener {
        Opener::Key(key) => match seal::open(key, stored.id, sealed) {
            Ok(fields) => Ok((stored.open(Some(fields)).map_err(|e| e.to_string())?, None)),
            Err(e) => Ok((statistical()?, Some(e.to_string()))),
        },
        Opener::Unreadable(why) => Ok((statistical()?, Some(why.clone()))),
    }
}

/// Access records whose resource is one of `exact` or starts with one of `prefixes`.
async fn accesses(pool: &PgPool, exact: &[String], prefixes: &[String]) -> Result<Vec<AccessRecord>, sqlx::Error> {
    sqlx::query_as(
        // Each prefix as a bytewise range, which `access_log_by_resource_c` serves (the log of
        // every read grows without bound; a scan per export would not do).
        "SELECT id, at, token_id, org_id, role, action, resource, detail FROM access_log
         WHERE resource = ANY($1)
         UNION
         SELECT a.id, a.at, a.token_id, a.org_id, a.role, a.action, a.resource, a.detail
         FROM UNNEST($2::text[]) AS p(prefix)
         CROSS JOIN LATERAL (
           SELECT * FROM access_log l
           WHERE (l.resource COLLATE \"C\") >= p.prefix AND (l.resource COLLATE \"C\") < p.prefix || chr(1114111)
         ) a
         ORDER BY id LIMIT 100000",
    )
    .bind(exact)
    .bind(prefixes)
    .fetch_all(pool)
    .await
}
