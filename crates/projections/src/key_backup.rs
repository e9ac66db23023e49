//! Backing up and restoring the key store: the one store whose loss loses data (the log is
//! sealed with these keys). A backup holds the rows of `client_keys` as they are: wrapped keys
//! (never plaintext ones), KEK ids, keyed hashes of client references, and tombstones. It is
//! as sensitive as the database and useless without the KEK and the pepper, which are backed up
//! apart (docs/OPERATIONS.md).
//!
//! Restoring never brings an erased client back: rows the database holds are kept as they are,
//! and every erasure recorded in the log (`relais.client.erased`) is applied again after the
//! restore, so a backup taken before an erasure cannot undo it.

use crate::erasure::LoggedErasure;
use crate::keys::{KeyError, KeyStore};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

/// The format name written into every backup.
pub const BACKUP_FORMAT: &str = "relais-key-store/1";

/// A backup of the key store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyBackup {
    /// Always [`BACKUP_FORMAT`].
    pub format: String,
    /// When it was taken.
    pub created_at: DateTime<Utc>,
    /// The current KEK's id at that time.
    pub current_kek: String,
    /// Every row.
    pub keys: Vec<BackedUpKey>,
}

/// One row of `client_keys`, as backed up. Binary values are base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackedUpKey {
    /// Key id.
    pub key_id: Uuid,
    /// Organisation.
    pub org_id: String,
    /// HMAC of the client reference (base64).
    pub client_ref_hash: String,
    /// The wrapped key (base64), `None` for a tombstone.
    pub wrapped_key: Option<String>,
    /// The KEK that wrapped it.
    pub kek_id: String,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// When the client was erased.
    pub erased_at: Option<DateTime<Utc>>,
}

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a key store backup of a known format.
    #[error("not a Relais key store backup (format {0:?})")]
    Format(String),
    /// A row of the backup is malformed.
    #[error("key {key_id}: {detail}")]
    Row {
        /// The row.
        key_id: Uuid,
        /// What is wrong.
        detail: String,
    },
    /// Live keys in the backup are wrapped by KEKs that are not configured: the restore would
    /// bring back keys nobody can unwrap. Configure them (`RELAIS_KEK_PREVIOUS`) and retry.
    #[error("keys in the backup are wrapped by KEK(s) {0:?}, which are not configured (RELAIS_KEK_PREVIOUS)")]
    UnknownKeks(Vec<String>),
    /// The key store failed.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<sqlx::Error> for RestoreError {
    fn from(e: sqlx::Error) -> Self {
        RestoreError::Keys(KeyError::from(e))
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// Rows written from the backup.
    pub restored: u64,
    /// Rows of the backup the store already held (kept as they are).
    pub already_present: u64,
    /// Keys destroyed again because the log records their erasure.
    pub erasures_reapplied: u64,
    /// Keys the store had given, after the loss, to a client the backup shows erased: destroyed
    /// too (their erasure event is owed, and the next sweep appends it), so that no erased
    /// client comes back under a new key.
    pub new_keys_of_erased_clients: Vec<Uuid>,
    /// Live keys of the backup that could not be restored because the store had meanwhile given
    /// the same client a new key: (the backup's key, the store's key). The client's events
    /// sealed with the backup's key stay unreadable until an operator decides; never counted
    /// as present.
    pub conflicts: Vec<(Uuid, Uuid)>,
}

type Row = (Uuid, String, Vec<u8>, Option<Vec<u8>>, String, DateTime<Utc>, Option<DateTime<Utc>>);

impl KeyStore {
    /// Reads every row of the key store, `batch` rows per query, calling `progress` with the
    /// number read so far.
    pub async fn backup(&self, batch: i64, mut progress: impl FnMut(u64)) -> Result<KeyBackup, KeyError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut keys = Vec::new();
        let mut after = Uuid::nil();
        loop {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT key_id, org_id, client_ref_hash, wrapped_key, kek_id, created_at, erased_at
                 FROM client_keys WHERE key_id > $1 ORDER BY key_id LIMIT $2",
            )
            .bind(after)
            .bind(batch.max(1))
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last().map(|r| r.0) else { break };
            after = last;
            for (key_id, org_id, hash, wrapped, kek_id, created_at, erased_at) in rows {
                keys.push(BackedUpKey {
                    key_id,
                    org_id,
                    client_ref_hash: b64.encode(hash),
                    wrapped_key: wrapped.map(|w| b64.encode(w)),
                    kek_id,
                    created_at,
                    erased_at,
                });
            }
            progress(keys.len() as u64);
        }
        Ok(KeyBackup { format: BACKUP_FORMAT.into(), created_at: Utc::now(), current_kek: self.kek.id().into(), keys })
    }

    /// Restores a backup into the store (empty or partly empty), `batch` rows per statement.
    /// Idempotent: rows the store holds are kept; `erased_in_log` (the erasures the log
    /// records, [`crate::erasure::erasures_in_log`]) is applied again afterwards, so that no
    /// erased client comes back. An erasure counts only for a key of its own organisation.
    pub async fn restore(
        &self,
        backup: &KeyBackup,
        erased_in_log: &[LoggedErasure],
        batch: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<RestoreReport, RestoreError> {
        if backup.format != BACKUP_FORMAT {
            return Err(RestoreError::Format(backup.format.clone()));
        }
        let mut by_key: HashMap<(Uuid, &str), DateTime<Utc>> = HashMap::new();
        for e in erased_in_log {
            by_key.entry((e.key_id, e.org.as_str())).or_insert(e.erased_at);
        }
        let erased_in_log = &by_key;
        let unknown: BTreeSet<String> = backup
            .keys
            .iter()
            .filter(|k| k.wrapped_key.is_some() && logged(erased_in_log, k.key_id, &k.org_id).is_none())
            .filter(|k| !self.kek.knows(&k.kek_id))
            .map(|k| k.kek_id.clone())
            .collect();
        if !unknown.is_empty() {
            return Err(RestoreError::UnknownKeks(unknown.into_iter().collect()));
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut report = RestoreReport::default();
        let mut done = 0u64;
        for chunk in backup.keys.chunks(batch.max(1)) {
            let mut c = Columns::default();
            for k in chunk {
                let row_error = |detail: &str| RestoreError::Row { key_id: k.key_id, detail: detail.into() };
                let hash = b64.decode(&k.client_ref_hash).map_err(|_| row_error("client_ref_hash is not base64"))?;
                let erased_at = logged(erased_in_log, k.key_id, &k.org_id).or(k.erased_at);
                let wrapped = match (&k.wrapped_key, erased_at) {
                    (_, Some(_)) => None,
                    (Some(w), None) => Some(b64.decode(w).map_err(|_| row_error("wrapped_key is not base64"))?),
                    (None, None) => return Err(row_error("a row without a key must have an erasure time")),
                };
                c.key_id.push(k.key_id);
                c.org_id.push(k.org_id.clone());
                c.hash.push(hash);
                c.wrapped.push(wrapped);
                c.kek_id.push(k.kek_id.clone());
                c.created_at.push(k.created_at);
                c.erased_at.push(erased_at);
            }
            let inserted = sqlx::query(
                "INSERT INTO client_keys (key_id, org_id, client_ref_hash, wrapped_key, kek_id, created_at, erased_at)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::text[],
                                      $6::timestamptz[], $7::timestamptz[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(&c.key_id)
            .bind(&c.org_id)
            .bind(&c.hash)
            .bind(&c.wrapped)
            .bind(&c.kek_id)
            .bind(&c.created_at)
            .bind(&c.erased_at)
            .execute(&self.pool)
            .await?
            .rows_affected();
            report.restored += inserted;
            // A row not inserted is present, unless the store holds another key for the same
            // client (its organisation and reference hash): then it is a conflict.
            let displaced: Vec<(Uuid, Uuid)> = sqlx::query_as(
                "SELECT u.key_id, c.key_id
                 FROM UNNEST($1::uuid[], $2::text[], $3::bytea[]) AS u(key_id, org_id, hash)
                 JOIN client_keys c ON c.org_id = u.org_id AND c.client_ref_hash = u.hash AND c.key_id <> u.key_id
                 WHERE NOT EXISTS (SELECT 1 FROM client_keys k WHERE k.key_id = u.key_id)",
            )
            .bind(&c.key_id)
            .bind(&c.org_id)
            .bind(&c.hash)
            .fetch_all(&self.pool)
            .await?;
            report.already_present += chunk.len() as u64 - inserted - displaced.len() as u64;
            for (backup_key, store_key) in displaced {
                let erased = c.key_id.iter().position(|k| *k == backup_key).and_then(|i| c.erased_at[i]).is_some();
                if !erased {
                    report.conflicts.push((backup_key, store_key));
                    continue;
                }
                // The client was erased before the loss: the key given since is destroyed too,
                // its erasure event owed, so the next sweep appends it. The backup keeps no
                // erasure reason: the event names the client's request.
                let destroyed = sqlx::query(
                    "UPDATE client_keys SET wrapped_key = NULL, erased_at = now(), erasure_reason = 'client_request',
                            erasure_actor = 'relais:key-restore'
                     WHERE key_id = $1 AND erased_at IS NULL",
                )
                .bind(store_key)
                .execute(&self.pool)
                .await?
                .rows_affected();
                self.forget(store_key);
                if destroyed > 0 {
                    report.new_keys_of_erased_clients.push(store_key);
                }
            }
            done += chunk.len() as u64;
            progress(done);
        }
        let (mut ids, mut orgs, mut times) = (Vec::new(), Vec::new(), Vec::new());
        for ((key_id, org), at) in erased_in_log {
            ids.push(*key_id);
            orgs.push(org.to_string());
            times.push(*at);
        }
        report.erasures_reapplied = sqlx::query(
            "UPDATE client_keys c SET wrapped_key = NULL, erased_at = u.erased_at
             FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS u(key_id, org_id, erased_at)
             WHERE c.key_id = u.key_id AND c.org_id = u.org_id AND c.wrapped_key IS NOT NULL",
        )
        .bind(&ids)
        .bind(&orgs)
        .bind(&times)
        .execute(&self.pool)
        .await?
        .rows_affected();
        for id in ids {
            self.forget(id);
        }
        Ok(report)
    }
}

/// The time of a logged erasure of `key_id`, if the erasure is by the key's own organisation.
fn logged(erased_in_log: &HashMap<(Uuid, &str), DateTime<Utc>>, key_id: Uuid, org: &str) -> Option<DateTime<Utc>> {
    erased_in_log.get(&(key_id, org)).copied()
}

#[derive(Default)]
struct Columns {
    key_id: Vec<Uuid>,
    org_id: Vec<String>,
    hash: Vec<Vec<u8>>,
    wrapped: Vec<Option<Vec<u8>>>,
    kek_id: Vec<String>,
    created_at: Vec<DateTime<Utc>>,
    erased_at: Vec<Option<DateTime<Utc>>>,
}
