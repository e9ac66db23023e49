//! Encryption of an event's personal fields with the client's data key.
//!
//! Each client of each organisation has its own 256-bit data key. The personal fields of an
//! event are postcard-encoded and sealed with XChaCha20-Poly1305; the associated data binds the
//! ciphertext to the event id and the key id, so a sealed box cannot be moved to another event.
//! Destroying the key erases the client: the sealed boxes stay in the immutable log, unreadable,
//! and the audit chain over the stored bytes still holds.
//!
//! The nonce is supplied by the caller (this crate does no I/O, randomness included); it must
//! be 24 fresh random bytes per seal.

use crate::events::PersonalFields;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A client's data key (256 bits). Never logged: `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw key bytes, to be wrapped by the key-encryption key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// The sealed personal fields of one event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The opaque id of the client's data key (not derived from the client reference).
    pub key_id: Uuid,
    /// The XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext and Poly1305 tag of the postcard-encoded personal fields.
    pub ciphertext: Vec<u8>,
}

/// Why sealed fields could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key does not open the box: wrong key, or the bytes were altered.
    #[error("the personal fields of event {event_id} cannot be decrypted with key {key_id}")]
    Undecryptable {
        /// The event.
        event_id: Uuid,
        /// The key that was tried.
        key_id: Uuid,
    },
    /// The box opened but does not hold personal fields.
    #[error("the personal fields of event {event_id} are malformed")]
    Malformed {
        /// The event.
        event_id: Uuid,
    },
}

fn associated_data(event_id: Uuid, key_id: Uuid) -> [u8; 32] {
    let mut aad = [0u8; 32];
    aad[..16].copy_from_slice(event_id.as_bytes());
    aad[16..].copy_from_slice(key_id.as_bytes());
    aad
}

/// Seals an event's personal fields.
pub fn seal(key: &DataKey, key_id: Uuid, event_id: Uuid, nonce: [u8; 24], fields: &PersonalFields) -> Sealed {
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    let plaintext = postcard::to_allocvec(fields).unwrap_or_default();
    let aad = associated_data(event_id, key_id);
    // Encryption into a Vec fails only past 2^38 bytes; an event is bounded far below.
    let ciphertext =
        cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: &plaintext, aad: &aad }).unwrap_or_default();
    Sealed { key_id, nonce, ciphertext }
}

/// Opens sealed personal fields with the client's data key.
pub fn open(key: &DataKey, event_id: Uuid, sealed: &Sealed) -> Result<PersonalFields, SealError> {
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    let aad = associated_data(event_id, sealed.key_id);
    let plaintext = cipher
        .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
        .map_err(|_| SealError::Undecryptable { event_id, key_id: sealed.key_id })?;
    postcard::from_bytes(&plaintext).map_err(|_| SealError::Malformed { event_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> PersonalFields {
        PersonalFields(vec![("client_ref".into(), "cl-1".into()), ("note".into(), "x".into())])
    }

    #[test]
    fn sealed_fields_open_with_the_same_key_and_event() {
        let key = DataKey::from_bytes([7; 32]);
        let (kid, eid) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let s = seal(&key, kid, eid, [1; 24], &fields());
        assert!(!s.ciphertext.windows(4).any(|w| w == b"cl-1"));
        assert_eq!(open(&key, eid, &s), Ok(fields()));
    }

    #[test]
    fn another_key_or_another_event_cannot_open() {
        let key = DataKey::from_bytes([7; 32]);
        let (kid, eid) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let s = seal(&key, kid, eid, [1; 24], &fields());
        assert!(matches!(open(&DataKey::from_bytes([8; 32]), eid, &s), Err(SealError::Undecryptable { .. })));
        assert!(matches!(open(&key, Uuid::from_u128(3), &s), Err(SealError::Undecryptable { .. })));
        let mut altered = s.clone();
        altered.ciphertext[0] ^= 1;
        assert!(matches!(open(&key, eid, &altered), Err(SealError::Undecryptable { .. })));
    }
}
