//! The key store: one data key per client of each organisation, wrapped by the key-encryption
//! key (KEK) from configuration. Erasing a client destroys its wrapped key; the row stays as a
//! tombstone so that the erasure is known and the reference is never silently re-keyed.
//!
//! The client reference itself is not stored: rows are found by HMAC-SHA256(pepper, org ‖ 0 ‖
//! client_ref), the pepper coming from configuration, so a copy of the database alone does not
//! reveal which reference a key belongs to.

use crate::db::DbError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
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

/// A key-encryption key and the pepper for client reference hashes, from configuration.
#[derive(Clone)]
pub struct Kek {
    id: String,
    key: [u8; 32],
    pepper: [u8; 32],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// Builds the KEK from 32 key bytes and 32 pepper bytes. Its id is derived from the key,
    /// so a wrapped key records which KEK wrapped it.
    pub fn new(key: [u8; 32], pepper: [u8; 32]) -> Self {
        let id = hex::encode(&Sha256::digest(key)[..8]);
        Self { id, key, pepper }
    }

    /// The KEK's id (a fingerprint, not the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn wrap(&self, key_id: Uuid, data_key: &DataKey) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(self.key.as_slice().into());
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: data_key.as_bytes(), aad: key_id.as_bytes() })
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    fn unwrap_key(&self, key_id: Uuid, wrapped: &[u8]) -> Option<DataKey> {
        if wrapped.len() < 24 {
            return None;
        }
        let cipher = XChaCha20Poly1305::new(self.key.as_slice().into());
        let plain = cipher
            .decrypt(XNonce::from_slice(&wrapped[..24]), Payload { msg: &wrapped[24..], aad: key_id.as_bytes() })
            .ok()?;
        let bytes: [u8; 32] = plain.try_into().ok()?;
        Some(DataKey::from_bytes(bytes))
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

/// What the key store knows of a key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLookup {
    /// The client's data key.
    Key(DataKey),
    /// The client was erased: the key is destroyed.
    Erased,
    /// No such key (an event published directly with a key id Relais never issued).
    Unknown,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The client was erased; new events about the client cannot be sealed.
    #[error("client was erased")]
    ClientErased,
    /// The wrapped key does not unwrap with the configured KEK.
    #[error("data key {0} cannot be unwrapped with KEK {1}: wrong key-encryption key?")]
    Unwrap(Uuid, String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Db(DbError::from(e))
    }
}

const CACHE_TTL: Duration = Duration::from_secs(30);
const CACHE_MAX: usize = 200_000;

/// The key store.
#[derive(Clone, Debug)]
pub struct KeyStore {
    pool: PgPool,
    kek: Arc<Kek>,
    cache: Arc<Mutex<HashMap<Uuid, (Instant, DataKey)>>>,
}

impl KeyStore {
    /// A key store over the pool with the configured KEK.
    pub fn new(pool: PgPool, kek: Kek) -> Self {
        Self { pool, kek: Arc::new(kek), cache: Arc::default() }
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

    /// Forgets a key from this process's cache (after an erasure).
    pub fn forget(&self, key_id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&key_id);
        }
    }

    /// The data key of a client, created on first use.
    pub async fn key_for_client(&self, org: &OrgId, client_ref: &str) -> Result<(Uuid, DataKey), KeyError> {
        let ref_hash = self.kek.client_ref_hash(org, client_ref);
        let existing: Option<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT key_id, wrapped_key FROM client_keys WHERE org_id = $1 AND client_ref_hash = $2")
                .bind(org.as_str())
                .bind(&ref_hash)
                .fetch_optional(&self.pool)
                .await?;
        if let Some((key_id, wrapped)) = existing {
            return self.unwrapped(key_id, wrapped.as_deref()).map(|k| (key_id, k));
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

    /// The data keys of several clients of one organisation, created on first use: one query
    /// for those that exist and one insert for the new ones, whatever the number of clients.
    /// An erased client maps to `Err(KeyError::ClientErased)`.
    pub async fn keys_for_clients(
        &self,
        org: &OrgId,
        client_refs: &[&str],
    ) -> Result<HashMap<String, Result<(Uuid, DataKey), KeyError>>, KeyError> {
        let hashes: Vec<Vec<u8>> = client_refs.iter().map(|r| self.kek.client_ref_hash(org, r)).collect();
        let rows: Vec<(Vec<u8>, Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT client_ref_hash, key_id, wrapped_key FROM client_keys WHERE org_id = $1 AND client_ref_hash = ANY($2)",
        )
        .bind(org.as_str())
        .bind(&hashes)
        .fetch_all(&self.pool)
        .await?;
        let found: HashMap<Vec<u8>, (Uuid, Option<Vec<u8>>)> =
            rows.into_iter().map(|(h, id, w)| (h, (id, w))).collect();
        let mut out = HashMap::new();
        let (mut new_ids, mut new_hashes, mut new_wrapped, mut new_refs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (client_ref, hash) in client_refs.iter().zip(&hashes) {
            if out.contains_key(*client_ref) {
                continue;
            }
            match found.get(hash) {
                Some((key_id, wrapped)) => {
                    let key = self.unwrapped(*key_id, wrapped.as_deref()).map(|k| (*key_id, k));
                    out.insert((*client_ref).to_owned(), key);
                }
                None if !new_refs.contains(client_ref) => {
                    let mut raw = [0u8; 32];
                    rand::rng().fill_bytes(&mut raw);
                    let key = DataKey::from_bytes(raw);
                    let key_id = Uuid::new_v4();
                    new_wrapped.push(self.kek.wrap(key_id, &key));
                    new_ids.push(key_id);
                    new_hashes.push(hash.clone());
                    new_refs.push(*client_ref);
                    out.insert((*client_ref).to_owned(), Ok((key_id, key)));
                }
                None => {}
            }
        }
        if !new_ids.is_empty() {
            let inserted: Vec<Uuid> = sqlx::query_scalar(
                "INSERT INTO client_keys (key_id, org_id, client_ref_hash, wrapped_key, kek_id)
                 SELECT k, $2, h, w, $5 FROM UNNEST($1::uuid[], $3::bytea[], $4::bytea[]) AS u(k, h, w)
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
                    out.insert((*client_ref).to_owned(), theirs);
                }
            }
        }
        Ok(out)
    }

    fn unwrapped(&self, key_id: Uuid, wrapped: Option<&[u8]>) -> Result<DataKey, KeyError> {
        if let Some(k) = self.cached(key_id) {
            return Ok(k);
        }
        let wrapped = wrapped.ok_or(KeyError::ClientErased)?;
        let key = self.kek.unwrap_key(key_id, wrapped).ok_or_else(|| KeyError::Unwrap(key_id, self.kek.id.clone()))?;
        self.remember(key_id, &key);
        Ok(key)
    }

    /// Looks up keys by id, for reading sealed fields.
    pub async fn lookup_many(&self, key_ids: &[Uuid]) -> Result<HashMap<Uuid, KeyLookup>, KeyError> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for id in key_ids {
            if out.contains_key(id) {
                continue;
            }
            match self.cached(*id) {
                Some(k) => {
                    out.insert(*id, KeyLookup::Key(k));
                }
                None => missing.push(*id),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        let rows: Vec<(Uuid, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT key_id, wrapped_key FROM client_keys WHERE key_id = ANY($1)")
                .bind(&missing)
                .fetch_all(&self.pool)
                .await?;
        for (id, wrapped) in rows {
            let lookup = match wrapped {
                None => KeyLookup::Erased,
                Some(w) => KeyLookup::Key(self.unwrapped(id, Some(&w))?),
            };
            out.insert(id, lookup);
        }
        for id in missing {
            out.entry(id).or_insert(KeyLookup::Unknown);
        }
        Ok(out)
    }

    /// Destroys a client's data key. Returns the key id, or `None` if the client has none.
    pub async fn erase(&self, org: &OrgId, client_ref: &str) -> Result<Option<Uuid>, KeyError> {
        let ref_hash = self.kek.client_ref_hash(org, client_ref);
        let key_id: Option<Uuid> = sqlx::query_scalar(
            "UPDATE client_keys SET wrapped_key = NULL, erased_at = coalesce(erased_at, now())
             WHERE org_id = $1 AND client_ref_hash = $2 RETURNING key_id",
        )
        .bind(org.as_str())
        .bind(&ref_hash)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(id) = key_id {
            self.forget(id);
        }
        Ok(key_id)
    }

    /// The key id of a client, and whether it was erased, without creating one.
    pub async fn find_client(&self, org: &OrgId, client_ref: &str) -> Result<Option<(Uuid, bool)>, KeyError> {
        let ref_hash = self.kek.client_ref_hash(org, client_ref);
        Ok(sqlx::query_as(
            "SELECT key_id, erased_at IS NOT NULL FROM client_keys WHERE org_id = $1 AND client_ref_hash = $2",
        )
        .bind(org.as_str())
        .bind(&ref_hash)
        .fetch_optional(&self.pool)
        .await?)
    }
}
