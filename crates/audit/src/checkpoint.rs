//! Signed checkpoints of the chain head.
//!
//! A checkpoint is the ed25519 signature of one line of UTF-8 text, its *statement*:
//!
//! ```text
//! relais-checkpoint-v1 <stream> <sequence> <head: 64 hex digits> <signed at: RFC 3339, µs, Z> <key id>
//! ```
//!
//! for example `relais-checkpoint-v1 RELAIS 1200 9f…e1 2026-03-02T09:30:00.000000Z 4be1c0d3a2f19e77`.
//! The key id is the first 8 bytes, in hex, of SHA-256 of the 32-byte public key; it tells a
//! verifier holding several keys (after a rotation) which one signed. The statement is the
//! authority: the other fields of a checkpoint's JSON repeat it for people and must agree.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signer, Verifier};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::chain::Link;

/// First word of every statement.
pub const STATEMENT_TAG: &str = "relais-checkpoint-v1";

/// Why a checkpoint or a key is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The JSON or the statement does not have the documented shape.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// No key of the verifier has the checkpoint's key id.
    #[error("signed by key {0}, which is not among the public keys given")]
    UnknownKey(String),
    /// The signature does not verify with the key.
    #[error("the signature does not verify with key {0}")]
    BadSignature(String),
    /// A key is not 32 bytes of base64, or not a valid ed25519 point.
    #[error("not an ed25519 key: {0}")]
    BadKey(String),
}

/// The private key that signs checkpoints (from configuration). `Debug` shows only its id.
#[derive(Clone)]
pub struct SigningKey(ed25519_dalek::SigningKey);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.verifying_key().key_id())
    }
}

impl SigningKey {
    /// The key of a 32-byte seed (`RELAIS_AUDIT_SIGNING_KEY`, base64).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Its public key.
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// Signs the chain head `head` at `sequence` of `stream`, at `signed_at` (µs precision).
    pub fn sign(&self, stream: &str, sequence: u64, head: Link, signed_at: DateTime<Utc>) -> Checkpoint {
        let signed_at = DateTime::from_timestamp_micros(signed_at.timestamp_micros()).unwrap_or(signed_at);
        let key_id = self.verifying_key().key_id();
        let mut checkpoint =
            Checkpoint { stream: stream.to_owned(), sequence, head, signed_at, key_id, signature: [0; 64] };
        checkpoint.signature = self.0.sign(checkpoint.statement().as_bytes()).to_bytes();
        checkpoint
    }
}

/// A public key that verifies checkpoints.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id())
    }
}

impl VerifyingKey {
    /// Parses the standard base64 of the 32-byte key (what `GET /v1/audit/public-key` and
    /// `relais audit public-key` give).
    pub fn from_base64(text: &str) -> Result<Self, CheckpointError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| CheckpointError::BadKey(format!("not base64: {e}")))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|_| CheckpointError::BadKey("must decode to exactly 32 bytes".into()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| CheckpointError::BadKey("not a valid ed25519 public key".into()))
    }

    /// Standard base64 of the 32-byte key.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes())
    }

    /// The key id: hex of the first 8 bytes of SHA-256 of the key.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0.to_bytes())[..8])
    }
}

/// A signed statement that the chain head at `sequence` of `stream` was `head`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The event stream's name.
    pub stream: String,
    /// The sequence of the head.
    pub sequence: u64,
    /// The chain link at `sequence`.
    pub head: Link,
    /// When it was signed.
    pub signed_at: DateTime<Utc>,
    /// The id of the signing key.
    pub key_id: String,
    /// The ed25519 signature of [`Checkpoint::statement`].
    pub signature: [u8; 64],
}

fn malformed(detail: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(detail.into())
}

impl Checkpoint {
    /// The signed text.
    pub fn statement(&self) -> String {
        format!(
            "{STATEMENT_TAG} {} {} {} {} {}",
            self.stream,
            self.sequence,
            self.head.to_hex(),
            self.signed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.key_id
        )
    }

    /// Reads a statement and its signature.
    pub fn from_statement(statement: &str, signature: &[u8]) -> Result<Self, CheckpointError> {
        let parts: Vec<&str> = statement.split(' ').collect();
        let [tag, stream, sequence, head, signed_at, key_id] = parts.as_slice() else {
            return Err(malformed("a statement has six words"));
        };
        if *tag != STATEMENT_TAG {
            return Err(malformed(format!("a statement starts with {STATEMENT_TAG}")));
        }
        let sequence: u64 = sequence.parse().map_err(|_| malformed("sequence is not a number"))?;
        let head = Link::from_hex(head).ok_or_else(|| malformed("head is not 64 hex digits"))?;
        let signed_at = DateTime::parse_from_rfc3339(signed_at)
            .map_err(|_| malformed("signed-at is not an RFC 3339 time"))?
            .with_timezone(&Utc);
        let signature: [u8; 64] = signature.try_into().map_err(|_| malformed("a signature is 64 bytes"))?;
        let checkpoint =
            Self { stream: (*stream).to_owned(), sequence, head, signed_at, key_id: (*key_id).to_owned(), signature };
        if checkpoint.statement() != statement {
            return Err(malformed("the statement is not in canonical form"));
        }
        Ok(checkpoint)
    }

    /// Checks the signature with the key among `keys` whose id the checkpoint names.
    pub fn verify(&self, keys: &[VerifyingKey]) -> Result<(), CheckpointError> {
        let key = keys
            .iter()
            .find(|k| k.key_id() == self.key_id)
            .ok_or_else(|| CheckpointError::UnknownKey(self.key_id.clone()))?;
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.0
            .verify(self.statement().as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature(self.key_id.clone()))
    }

    /// The JSON form: a replay line, and the message body on the audit stream.
    pub fn to_json(&self) -> Map<String, Value> {
        let Value::Object(map) = json!({
            "relaiskind": "checkpoint",
            "statement": self.statement(),
            "signature": base64::engine::general_purpose::STANDARD.encode(self.signature),
            "stream": self.stream,
            "sequence": self.sequence,
            "head": self.head.to_hex(),
            "signedat": self.signed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "keyid": self.key_id,
        }) else {
            return Map::new();
        };
        map
    }

    /// Reads the JSON form: the statement and the signature are authoritative; the repeated
    /// fields, when present, must agree with the statement.
    pub fn from_json(value: &Value) -> Result<Self, CheckpointError> {
        let statement = value.get("statement").and_then(Value::as_str).ok_or_else(|| malformed("no statement"))?;
        let signature = value.get("signature").and_then(Value::as_str).ok_or_else(|| malformed("no signature"))?;
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature)
            .map_err(|_| malformed("the signature is not base64"))?;
        let checkpoint = Self::from_statement(statement, &signature)?;
        let shown = checkpoint.to_json();
        for field in ["stream", "sequence", "head", "signedat", "keyid"] {
            if let Some(v) = value.get(field)
                && Some(v) != shown.get(field)
            {
                return Err(malformed(format!("{field} disagrees with the signed statement")));
            }
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_seed([7; 32])
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_round_trips_through_json() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("time");
        let c = key().sign("RELAIS", 42, Link([3; 32]), at);
        assert!(c.statement().starts_with("relais-checkpoint-v1 RELAIS 42 0303"));
        let public = key().verifying_key();
        assert_eq!(c.verify(&[public]), Ok(()));
        let back = Checkpoint::from_json(&Value::Object(c.to_json())).expect("reads back");
        assert_eq!(back, c);
        let again = VerifyingKey::from_base64(&public.to_base64()).expect("key parses");
        assert_eq!(again, public);
    }

    #[test]
    fn an_edited_statement_or_another_key_does_not_verify() {
        let c = key().sign("RELAIS", 42, Link([3; 32]), Utc::now());
        let mut forged = c.clone();
        forged.sequence = 43;
        assert!(matches!(forged.verify(&[key().verifying_key()]), Err(CheckpointError::BadSignature(_))));
        let other = SigningKey::from_seed([8; 32]).verifying_key();
        assert!(matches!(c.verify(&[other]), Err(CheckpointError::UnknownKey(_))));
        let mut json = c.to_json();
        json.insert("sequence".into(), 41.into());
        assert!(matches!(Checkpoint::from_json(&Value::Object(json)), Err(CheckpointError::Malformed(_))));
    }
}
