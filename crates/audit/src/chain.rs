//! The hash chain over the event stream, in sequence order.
//!
//! ```text
//! link(0) = 32 zero bytes                                       (genesis)
//! link(s) = SHA-256("relais-chain-v1" || link(s-1) || u64be(s) || 0x01
//!                   || SHA-256(subject) || SHA-256(payload))    (a message at s)
//! link(s) = SHA-256("relais-chain-v1" || link(s-1) || u64be(s) || 0x00)
//!                                                               (no message at s)
//! ```
//!
//! The subject is covered: moving a message to another subject (another organisation or
//! another case) is tampering. A sequence with no message (a message deleted before the chain
//! reached it) is chained as such, so the chain covers every sequence number from 1 to its
//! head and a later "filling" of the hole breaks it.

use sha2::{Digest, Sha256};

/// Domain separation of every link.
pub const CHAIN_TAG: &[u8] = b"relais-chain-v1";

/// One link of the chain (a SHA-256 digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Link(pub [u8; 32]);

/// The link before sequence 1.
pub const GENESIS: Link = Link([0; 32]);

impl Link {
    /// Lower-case hex, as written in replays and printed by `relais verify`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    /// From stored bytes (PostgreSQL `bytea`); `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// The link after this one for a message at `seq`.
    pub fn next(&self, seq: u64, subject: &str, payload: &[u8]) -> Link {
        link(self, seq, subject, payload)
    }

    /// The link after this one for a sequence without a message.
    pub fn next_missing(&self, seq: u64) -> Link {
        missing_link(self, seq)
    }
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({})", self.to_hex())
    }
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The link of the message stored at `seq` on `subject` with the stored bytes `payload`.
pub fn link(prev: &Link, seq: u64, subject: &str, payload: &[u8]) -> Link {
    let mut h = Sha256::new();
    h.update(CHAIN_TAG);
    h.update(prev.0);
    h.update(seq.to_be_bytes());
    h.update([1u8]);
    h.update(Sha256::digest(subject.as_bytes()));
    h.update(Sha256::digest(payload));
    Link(h.finalize().into())
}

/// The link of a sequence that holds no message.
pub fn missing_link(prev: &Link, seq: u64) -> Link {
    let mut h = Sha256::new();
    h.update(CHAIN_TAG);
    h.update(prev.0);
    h.update(seq.to_be_bytes());
    h.update([0u8]);
    Link(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_match_the_documented_test_vectors() {
        // The vectors of docs/AUDIT.md, computed there with Python's hashlib.
        let l1 = link(&GENESIS, 1, "relais.ev.apo.cases.c-1", b"payload");
        assert_eq!(l1.to_hex(), "80e22743a13c6ee002ac7c256b202e92a79fcd0aca025e48ed4ff3baddb3af83");
        assert_eq!(missing_link(&l1, 2).to_hex(), "ace7e87ea1534015b683f622f4a4a67e9582b358a3be76c7f75edacbfe38a6b4");
        assert_eq!(Link::from_hex(&l1.to_hex()), Some(l1));
    }

    #[test]
    fn each_input_changes_the_link() {
        let base = link(&GENESIS, 1, "relais.ev.apo.cases.c-1", b"payload");
        assert_ne!(base, link(&GENESIS, 2, "relais.ev.apo.cases.c-1", b"payload"));
        assert_ne!(base, link(&GENESIS, 1, "relais.ev.dsr.cases.c-1", b"payload"));
        assert_ne!(base, link(&GENESIS, 1, "relais.ev.apo.cases.c-1", b"payloae"));
        assert_ne!(base, link(&base, 1, "relais.ev.apo.cases.c-1", b"payload"));
        assert_ne!(missing_link(&GENESIS, 1), link(&GENESIS, 1, "", b""));
    }
}
