//! The key store: one data key per client of each organisation, wrapped by the key-encryption
//! key (KEK) from configuration. Erasing a client destroys its wrapped key; the row stays as a
//! tombstone so that the erasure is known and the reference is never silently re-keyed.
//!
//! The client reference itself is not stored: rows are found by HMAC-SHA256(pepper, org ‖ 0 ‖
//! client_ref), the pepper coming from configuration, so a copy of the database alone does not
//! reveal which reference a key belongs to.
//!
//! Every lookup asks the database whether the key still exists, so an erasure is effective at
//! once for every reader in every process. An in-process cache only saves unwrapping a key
//! that the database has just confirmed.
//!
//! The KEK can be rotated without touching the log: [`KeyStore::rotate`] re-wraps every data
//! key under the current KEK, reading the older ones with the previous KEKs given in
//! configuration. Each row records the id of the KEK that wrapped it. The pepper is separate
//! and is never rotated: changing it would make every client reference unfindable.
//!
//! Backups ([`KeyStore::backup`], [`KeyStore::restore`], module [`crate::key_backup`]) hold the
//! wrapped keys, never plaintext ones.

use crate::db::DbError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use relais_domain::OrgId;
use relais_domain::seal::DataKey;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The key-encryption keys and the pepper for client reference hashes, from configuration:
/// the current KEK (which wraps every new or rotated key) and previous KEKs (which only
/// unwrap keys not yet rotated).
#[derive(Clone)]
pub struct Kek {
    id: String,
    key: [u8; 32],
    pepper: [u8; 32],
    previous: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let previous: Vec<&str> = self.previous.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Kek({}, previous: {previous:?})", self.id)
    }
}

/// The id of a KEK: a fingerprint, not the key.
fn kek_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(key)[..8])
}

impl Kek {
    /// Builds the KEK from 32 key bytes and 32 pepper bytes. Its id is derived from the key,
    /// so a wrapped key records which KEK wrapped it.
    pub fn new(key: [u8; 32], pepper: [u8; 32]) -> Self {
        Self { id: kek_id(&key), key, pepper, previous: Vec::new() }
    }

    /// Adds previous KEKs: they unwrap keys wrapped before a rotation, and wrap nothing.
    pub fn with_previous(mut self, keys: impl IntoIterator<Item = [u8; 32]>) -> Self {
        for key in keys {
            let id = kek_id(&key);
            if id != self.id && !self.previous.iter().any(|(p, _)| *p == id) {
                self.previous.push((id, key));
            }
        }
        self
    }

    /// The current KEK's id (a fingerprint, not the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The ids of the previous KEKs.
    pub fn previous_ids(&self) -> Vec<&str> {
        self.previous.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// True if a key wrapped by the KEK with this id can be unwrapped.
    pub fn knows(&self, kek_id: &str) -> bool {
        self.wrapping_key(kek_id).is_some()
    }

    fn wrapping_key(&self, kek_id: &str) -> Option<&[u8; 32]> {
        if kek_id == self.id {
            return Some(&self.key);
        }
        self.previous.iter().find(|(id, _)| id == kek_id).map(|(_, k)| k)
    }

    fn wrap(&self, key_id: Uuid, data_key: &DataKey) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.key.as_slice().into());
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption into a Vec fails only past 2^38 bytes; a data key is 32.
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: data_key.as_bytes(), aad: key_id.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn unwrap_key(&self, key_id: Uuid, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let kek =
            self.wrapping_key(kek_id).ok_or_else(|| KeyError::UnknownKek { key_id, kek_id: kek_id.to_owned() })?;
        let unwrap_error = || KeyError::Unwrap(key_id, kek_id.to_owned());
        if wrapped.len() < 24 {
            return Err(unwrap_error());
        }
        let cipher = XChaCha20Poly1305::new(kek.as_slice().into());
        let plain = cipher
            .decrypt(XNonce::from_slice(&wrapped[..24]), Payload { msg: &wrapped[24..], aad: key_id.as_bytes() })
            .map_err(|_| unwrap_error())?;
        let bytes: [u8; 32] = plain.try_into().map_err(|_| unwrap_error())?;
        Ok(DataKey::from_bytes(bytes))
    }

    /// A fingerprint of the pepper (16 hex digits), which reveals nothing of it: processes of
    /// one deployment compare it, since another pepper would find no client's key.
    pub fn pepper_fingerprint(&self) -> String {
        // A reference hash always holds a 0 byte after the organisation; this label has none.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pepper).unwrap_or_else(|_| unreachable!());
        mac.update(b"relais:fingerprint");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    fn client_ref_hash(&self, org: &OrgId, client_ref: &str) -> Vec<u8> {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.pepper).unwrap_or_else(|_| unreachable!());
        mac.update(org.as_str().as_bytes());
        mac.update(&[0]);
        mac.update(client_ref.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// The data keys of clients by client reference, each with its key id;
/// `Err(KeyError::ClientErased)` for an erased client.
pub type ClientKeys = HashMap<String, Result<(Uuid, DataKey), KeyError>>;

/// What the key store knows of a key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The client's data key.
    Key(DataKey),
    /// The client was erased: the key is destroyed.
    Erased,
    /// No such key (an event published directly with a key id Relais never issued, or a key
    /// store that lost rows: see docs/OPERATIONS.md on restoring it).
    Unknown,
    /// The row holds a wrapped key that does not unwrap with the KEK it names: the row was
    /// altered or damaged (a KEK's id is its fingerprint, so this is not a configuration
    /// error). Readers treat the personal fields as unreadable; restore the row from a backup.
    Damaged,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The client was erased; new events about the client cannot be sealed (answer 409).
    #[error("client was erased")]
    ClientErased,
    /// The wrapped key does not unwrap with the KEK its row names: the KEK configured under
    /// that id is wrong, or the row was altered. Fix the configuration; do not retry blindly.
    #[error("data key {0} cannot be unwrapped with KEK {1}: wrong key-encryption key, or an altered row")]
    Unwrap(Uuid, String),
    /// The key was wrapped by a KEK that is not configured: add it to `RELAIS_KEK_PREVIOUS`
    /// (after a rotation that has not finished, or a restore from an older backup).
    #[error(
        "data key {key_id} is wrapped by KEK {kek_id}, which is not configured (RELAIS_KEK or RELAIS_KEK_PREVIOUS)"
    )]
    UnknownKek {
        /// The data key.
        key_id: Uuid,
        /// The KEK id its row names.
        kek_id: String,
    },
    /// Database failure (retry later).
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Db(DbError::from(e))
    }
}

/// Most unwrapped keys kept (about 100 bytes each with the map's own): past it the cache is
/// emptied. A miss costs one unwrap, not a query (the row is read anyway), so a small bound
/// keeps a process's memory flat however many clients the history holds.
const CACHE_MAX: usize = 20_000;
/// How long an unwrapped key stays in memory: it bounds how long a process keeps the
/// plaintext key of a client erased by another process (it is never used once the database
/// says the key is gone).
const CACHE_TTL: Duration = Duration::from_secs(300);

/// A client's key row, without the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKeyInfo {
    /// The key id.
    pub key_id: Uuid,
    /// The organisation.
    pub org: String,
    /// When the client was erased, if so.
    pub erased_at: Option<DateTime<Utc>>,
}

/// What [`KeyStore::erase_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedKey {
    /// The organisation of the client.
    pub org: String,
    /// When the key was destroyed (now, or at an earlier erasure).
    pub erased_at: DateTime<Utc>,
    /// True if this call destroyed the key; false if it was destroyed before.
    pub newly_erased: bool,
    /// The erasure's own reason (its code) and actor, kept until its event is in the log:
    /// those of this call, or of the earlier erasure that destroyed the key.
    pub reason: Option<String>,
    /// See `reason`.
    pub actor: Option<String>,
}

/// The key store.
#[derive(Clone, Debug)]
pub struct KeyStore {
    pub(crate) pool: PgPool,
    pub(crate) kek: Arc<Kek>,
    cache: Arc<Mutex<HashMap<Uuid, (Instant, DataKey)>>>,
}

impl KeyStore {
    /// A key store over the pool with the configured KEK.
    pub fn new(pool: PgPool, kek: Kek) -> Self {
        Self { pool, kek: Arc::new(kek), cache: Arc::default() }
    }

    /// The configured KEKs.
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    fn cached(&self, key_id: Uuid) -> Option<DataKey> {
        let cache = self.cache.lock().ok()?;
        cache.get(&key_id).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, k)| k.clone())
    }

    fn remember(&self, key_id: Uuid, key: &DataKey) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(key_id, (Instant::now(), key.clone()));
        }
    }

    /// Forgets a key from this process's cache (after an erasure). Lookups ask the database
    /// anyway; this only drops the plaintext key from memory sooner.
    pub fn forget(&self, key_id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&key_id);
        }
    }

    /// The data key of a client, created on first use.
    pub async fn key_for_client(&self, org: &OrgId, client_ref: &str) -> Result<(Uuid, DataKey), KeyError> {
        let ref_hash = self.kek.client_ref_hash(org, client_ref);
        let existing: Option<(Uuid, Option<Vec<u8>>, String)> = sqlx::query_as(
            "SELECT key_id, wrapped_key, kek_id FROM client_keys WHERE org_id = $1 AND client_ref_hash = $2",
        )
        .bind(org.as_str())
        .bind(&ref_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((key_id, wrapped, kek_id)) = existing {
            let wrapped = wrapped.ok_or(KeyError::ClientErased)?;
            return self.unwrapped(key_id, &kek_id, &wrapped).map(|k| (key_id, k));
        }
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let key = DataKey::from_bytes(raw);
        let key_id = Uuid::new_v4();
        let inserted = sqlx::query(
            "INSERT INTO client_keys (key_id, org_id, client_ref_hash, wrapped_key, kek_id) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (org_id, client_ref_hash) DO NOTHING",
        )
        .bind(key_id)
        .bind(org.as_str())
        .bind(&ref_hash)
        .bind(self.kek.wrap(key_id, &key))
        .bind(self.kek.id())
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            self.remember(key_id, &key);
            return Ok((key_id, key));
        }
        // Another request created it first: use theirs.
        Box::pin(self.key_for_client(org, client_ref)).await
    }

    /// The stored data keys of clients of one organisation, in one query, creating none:
    /// clients without a key are absent from the answer; an erased client maps to
    /// `Err(KeyError::ClientErased)`. The gateway asks this beside its other
    /// checks, and creates keys ([`KeyStore::create_missing_keys`]) only once a batch passed them.
    pub async fn find_client_keys(&self, org: &OrgId, client_refs: &[&str]) -> Result<ClientKeys, KeyError> {
        let mut out = HashMap::new();
        if client_refs.is_empty() {
            return Ok(out);
        }
        let hashes: Vec<Vec<u8>> = client_refs.iter().map(|r| self.kek.client_ref_hash(org, r)).collect();
        let rows = sqlx::query_as::<_, (Vec<u8>, Uuid, Option<Vec<u8>>, String)>(
            "SELECT client_ref_hash, key_id, wrapped_key, kek_id FROM client_keys
             WHERE org_id = $1 AND client_ref_hash = ANY($2)",
        )
        .bind(org.as_str())
        .bind(&hashes)
        .fetch_all(&self.pool)
        .await?;
        /// A stored key: its id, the wrapped key (`None` once erased) and the KEK that wrapped it.
        type StoredKey = (Uuid, Option<Vec<u8>>, String);
        let found: HashMap<Vec<u8>, StoredKey> = rows.into_iter().map(|(h, id, w, k)| (h, (id, w, k))).collect();
        for (client_ref, hash) in client_refs.iter().zip(&hashes) {
            if let Some((key_id, wrapped, kek_id)) = found.get(hash) {
                let key = match wrapped {
                    None => Err(KeyError::ClientErased),
                    Some(w) => self.unwrapped(*key_id, kek_id, w).map(|k| (*key_id, k)),
                };
                out.insert((*client_ref).to_owned(), key);
            }
        }
        Ok(out)
    }

    /// Creates, in one insert, the data keys of the clients of `client_refs` that `keys` lacks,
    /// and adds them to `keys`. A key another request created in between wins: it is used.
    pub async fn create_missing_keys(
        &self,
        org: &OrgId,
        client_refs: &[&str],
        keys: &mut ClientKeys,
    ) -> Result<(), KeyError> {
        let (mut new_ids, mut new_hashes, mut new_wrapped, mut new_refs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for client_ref in client_refs {
            if keys.contains_key(*client_ref) || new_refs.contains(client_ref) {
                continue;
            }
            let mut raw = [0u8; 32];
            rand::rng().fill_bytes(&mut raw);
            let key = DataKey::from_bytes(raw);
            let key_id = Uuid::new_v4();
            new_wrapped.push(self.kek.wrap(key_id, &key));
            new_ids.push(key_id);
            new_hashes.push(self.kek.client_ref_hash(org, client_ref));
            new_refs.push(*client_ref);
            keys.insert((*client_ref).to_owned(), Ok((key_id, key)));
        }
        if new_ids.is_empty() {
            return Ok(());
        }
        // In one order (ORDER BY h): two requests creating keys for the same new clients
        // wait for each other instead of deadlocking.
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO client_keys (key_id, org_id, client_ref_hash, wrapped_key, kek_id)
             SELECT k, $2, h, w, $5 FROM UNNEST($1::uuid[], $3::bytea[], $4::bytea[]) AS u(k, h, w)
             ORDER BY h
             ON CONFLICT (org_id, client_ref_hash) DO NOTHING RETURNING key_id",
        )
        .bind(&new_ids)
        .bind(org.as_str())
        .bind(&new_hashes)
        .bind(&new_wrapped)
        .bind(self.kek.id())
        .fetch_all(&self.pool)
        .await?;
        // Keys another request created in between win: use theirs.
        for (key_id, client_ref) in new_ids.iter().zip(&new_refs) {
            if !inserted.contains(key_id) {
                let theirs = Box::pin(self.key_for_client(org, client_ref)).await;
                keys.insert((*client_ref).to_owned(), theirs);
            }
        }
        Ok(())
    }

    /// Unwraps a key whose row the database has just shown to hold a wrapped key.
    fn unwrapped(&self, key_id: Uuid, kek_id: &str, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        if let Some(k) = self.cached(key_id) {
            return Ok(k);
        }
        let key = self.kek.unwrap_key(key_id, kek_id, wrapped)?;
        self.remember(key_id, &key);
        Ok(key)
    }

    /// Looks up keys by id, for reading sealed fields. Fails as a whole when a key is wrapped
    /// by a KEK that is not configured (a configuration error: the caller stops and retries
    /// once it is fixed, so that no reader takes a readable event for an erased one); a single
    /// damaged row is [`KeyLookup::Damaged`].
    pub async fn lookup_many(&self, key_ids: &[Uuid]) -> Result<HashMap<Uuid, KeyLookup>, KeyError> {
        let mut wanted: Vec<Uuid> = key_ids.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = HashMap::with_capacity(wanted.len());
        if wanted.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(Uuid, Option<Vec<u8>>, String)> =
            sqlx::query_as("SELECT key_id, wrapped_key, kek_id FROM client_keys WHERE key_id = ANY($1)")
                .bind(&wanted)
                .fetch_all(&self.pool)
                .await?;
        for (id, wrapped, kek_id) in rows {
            let lookup = match wrapped {
                None => {
                    self.forget(id);
                    KeyLookup::Erased
                }
                Some(w) => match self.unwrapped(id, &kek_id, &w) {
                    Ok(key) => KeyLookup::Key(key),
                    Err(e @ KeyError::Unwrap(..)) => {
                        tracing::error!(error = %e, "a data key row is damaged; restore it from a backup");
                        KeyLookup::Damaged
                    }
                    Err(e) => return Err(e),
                },
            };
            out.insert(id, lookup);
        }
        for id in wanted {
            out.entry(id).or_insert(KeyLookup::Unknown);
        }
        Ok(out)
    }

    /// Looks up one key by id.
    pub async fn lookup(&self, key_id: Uuid) -> Result<KeyLookup, KeyError> {
        Ok(self.lookup_many(&[key_id]).await?.remove(&key_id).unwrap_or(KeyLookup::Unknown))
    }

    /// Destroys a client's data key. Returns the key id, or `None` if the client has none.
    pub async fn erase(&self, org: &OrgId, client_ref: &str) -> Result<Option<Uuid>, KeyError> {
        let Some((key_id, _)) = self.find_client(org, client_ref).await? else { return Ok(None) };
        let reason = relais_domain::events::ErasureReason::ClientRequest;
        self.erase_key(key_id, relais_domain::reference::CodeList::code(reason), "relais:keys").await?;
        Ok(Some(key_id))
    }

    /// Destroys a data key by id, keeping the erasure's reason (its code) and actor for the
    /// event it owes. Returns `None` if there is no such key. Idempotent: a key destroyed before
    /// keeps its first erasure time, reason and actor.
    pub async fn erase_key(&self, key_id: Uuid, reason: &str, actor: &str) -> Result<Option<ErasedKey>, KeyError> {
        self.forget(key_id);
        // The reason and actor stay with the key until its erasure event is in the log.
        let newly: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE client_keys SET wrapped_key = NULL, erased_at = now(), erasure_reason = $2, erasure_actor = $3
             WHERE key_id = $1 AND erased_at IS NULL RETURNING org_id, erased_at",
        )
        .bind(key_id)
        .bind(reason)
        .bind(actor)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((org, erased_at)) = newly {
            return Ok(Some(ErasedKey {
                org,
                erased_at,
                newly_erased: true,
                reason: Some(reason.to_owned()),
                actor: Some(actor.to_owned()),
            }));
        }
        // Organisation, erasure time, reason and actor of a key destroyed before.
        type Before = (String, Option<DateTime<Utc>>, Option<String>, Option<String>);
        let before: Option<Before> = sqlx::query_as(
            "SELECT org_id, erased_at, erasure_reason, erasure_actor FROM client_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(before.and_then(|(org, at, reason, actor)| {
            Some(ErasedKey { org, erased_at: at?, newly_erased: false, reason, actor })
        }))
    }

    /// The key id of a client, and whether it was erased, without creating one.
    pub async fn find_client(&self, org: &OrgId, client_ref: &str) -> Result<Option<(Uuid, bool)>, KeyError> {
        Ok(self.client_info(org, client_ref).await?.map(|i| (i.key_id, i.erased_at.is_some())))
    }

    /// The key row of a client (without the key), without creating one.
    pub async fn client_info(&self, org: &OrgId, client_ref: &str) -> Result<Option<ClientKeyInfo>, KeyError> {
        let ref_hash = self.kek.client_ref_hash(org, client_ref);
        let row: Option<(Uuid, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT key_id, org_id, erased_at FROM client_keys WHERE org_id = $1 AND client_ref_hash = $2",
        )
        .bind(org.as_str())
        .bind(&ref_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(key_id, org, erased_at)| ClientKeyInfo { key_id, org, erased_at }))
    }

    /// The key row of a key id (without the key).
    pub async fn key_info(&self, key_id: Uuid) -> Result<Option<ClientKeyInfo>, KeyError> {
        let row: Option<(Uuid, String, Option<DateTime<Utc>>)> =
            sqlx::query_as("SELECT key_id, org_id, erased_at FROM client_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(key_id, org, erased_at)| ClientKeyInfo { key_id, org, erased_at }))
    }

    /// How many live data keys are wrapped by another KEK than the current one.
    pub async fn count_to_rotate(&self) -> Result<u64, KeyError> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM client_keys WHERE wrapped_key IS NOT NULL AND kek_id <> $1")
                .bind(self.kek.id())
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u64)
    }

    /// Re-wraps every live data key under the current KEK, `batch` keys per transaction,
    /// calling `progress` with the number of keys handled so far. The log is not touched: the
    /// data keys stay the same, only their wrapping changes. A key erased meanwhile stays
    /// erased. Keys that cannot be unwrapped are reported, not skipped silently.
    pub async fn rotate(&self, batch: i64, mut progress: impl FnMut(u64)) -> Result<RotationReport, KeyError> {
        let mut report = RotationReport::default();
        let mut after = Uuid::nil();
        let mut handled = 0u64;
        loop {
            let rows: Vec<(Uuid, Vec<u8>, String)> = sqlx::query_as(
                "SELECT key_id, wrapped_key, kek_id FROM client_keys
                 WHERE wrapped_key IS NOT NULL AND kek_id <> $1 AND key_id > $2 ORDER BY key_id LIMIT $3",
            )
            .bind(self.kek.id())
            .bind(after)
            .bind(batch.max(1))
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last().map(|r| r.0) else { break };
            after = last;
            let (mut ids, mut wrapped, mut old) = (Vec::new(), Vec::new(), Vec::new());
            for (key_id, w, kek_id) in &rows {
                match self.kek.unwrap_key(*key_id, kek_id, w) {
                    Ok(key) => {
                        ids.push(*key_id);
                        wrapped.push(self.kek.wrap(*key_id, &key));
                        old.push(kek_id.clone());
                    }
                    Err(e) => report.failed.push((*key_id, e.to_string())),
                }
            }
            // The guard on wrapped_key keeps a key erased between the read and this write
            // erased; the guard on kek_id skips a row another rotation did first.
            let done = sqlx::query(
                "UPDATE client_keys c SET wrapped_key = u.wrapped, kek_id = $4
                 FROM UNNEST($1::uuid[], $2::bytea[], $3::text[]) AS u(key_id, wrapped, old_kek)
                 WHERE c.key_id = u.key_id AND c.kek_id = u.old_kek AND c.wrapped_key IS NOT NULL",
            )
            .bind(&ids)
            .bind(&wrapped)
            .bind(&old)
            .bind(self.kek.id())
            .execute(&self.pool)
            .await?;
            report.rewrapped += done.rows_affected();
            handled += rows.len() as u64;
            progress(handled);
        }
        Ok(report)
    }
}

/// What a KEK rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Keys now wrapped by the current KEK.
    pub rewrapped: u64,
    /// Keys that could not be unwrapped, with the reason; they keep their old wrapping.
    pub failed: Vec<(Uuid, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_wrapped_by_a_previous_kek_unwraps_and_an_unknown_kek_is_named() {
        let old = Kek::new([1; 32], [9; 32]);
        let new = Kek::new([2; 32], [9; 32]).with_previous([[1; 32]]);
        let key = DataKey::from_bytes([5; 32]);
        let id = Uuid::from_u128(7);
        let wrapped = old.wrap(id, &key);
        assert_eq!(new.unwrap_key(id, old.id(), &wrapped).expect("previous KEK unwraps"), key);
        assert_eq!(new.previous_ids(), vec![old.id()]);
        let without = Kek::new([2; 32], [9; 32]);
        assert!(matches!(without.unwrap_key(id, old.id(), &wrapped), Err(KeyError::UnknownKek { .. })));
        // A wrong key under the right id, or an altered row, is a typed error, not a panic.
        assert!(matches!(new.unwrap_key(id, new.id(), &wrapped), Err(KeyError::Unwrap(..))));
        assert!(matches!(new.unwrap_key(id, old.id(), &wrapped[..10]), Err(KeyError::Unwrap(..))));
        assert!(matches!(new.unwrap_key(Uuid::from_u128(8), old.id(), &wrapped), Err(KeyError::Unwrap(..))));
    }

    #[test]
    fn the_pepper_does_not_change_with_the_kek() {
        let org = OrgId::parse("apo").expect("valid");
        let a = Kek::new([1; 32], [9; 32]);
        let b = Kek::new([2; 32], [9; 32]).with_previous([[1; 32]]);
        assert_eq!(a.client_ref_hash(&org, "cl-1"), b.client_ref_hash(&org, "cl-1"));
        assert_ne!(a.client_ref_hash(&org, "cl-1"), a.client_ref_hash(&org, "cl-2"));
        assert!(!format!("{b:?}").contains("[2"), "Debug shows ids only");
    }
}
