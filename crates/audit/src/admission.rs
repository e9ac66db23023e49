//! Admission tags: who put a message in the log.
//!
//! The chain proves that the log was not changed after it was chained; it cannot tell a
//! legitimate append from one made with bare broker credentials. So every legitimate writer
//! tags what it publishes, in the header [`HEADER`]:
//!
//! ```text
//! Relais-Admission: gateway:<tag>   (the HTTP gateway)
//! Relais-Admission: org:<tag>       (an organisation's own system publishing directly)
//! tag = base64url, no padding, of HMAC-SHA256(key, "relais-admission-v1" || 0x00 || subject || 0x00 || payload)
//! key = HMAC-SHA256(admission key, "gateway")          for gateway:
//! key = HMAC-SHA256(admission key, "org:" || <org id>)  for org:, the org of the subject
//! ```
//!
//! The admission key comes from configuration (`RELAIS_ADMISSION_KEY`); an organisation that
//! publishes directly receives only its own derived key (`relais audit admission-key --org`),
//! which admits messages on its own subjects only. A message without a valid tag was not
//! written by any legitimate writer: `relais verify` names it as inserted.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the tag.
pub const HEADER: &str = "Relais-Admission";

const TAG_CONTEXT: &[u8] = b"relais-admission-v1";

/// Who admitted a message, as far as its tag shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A valid gateway tag.
    Gateway,
    /// A valid tag of the organisation whose subject the message is on.
    Org,
    /// No tag.
    Missing,
    /// A tag that does not verify (forged, or the message was changed after it was tagged).
    Invalid,
}

impl Admission {
    /// True for a valid tag.
    pub fn is_admitted(self) -> bool {
        matches!(self, Admission::Gateway | Admission::Org)
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn tag_mac(key: &[u8; 32], subject: &str, payload: &[u8]) -> HmacSha256 {
    let mut m = mac(key);
    m.update(TAG_CONTEXT);
    m.update(&[0]);
    m.update(subject.as_bytes());
    m.update(&[0]);
    m.update(payload);
    m
}

fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The header value an organisation's direct publisher sets, with its derived key.
pub fn org_tag(org_key: &[u8; 32], subject: &str, payload: &[u8]) -> String {
    format!("org:{}", encode(&tag_mac(org_key, subject, payload).finalize().into_bytes()))
}

/// The admission key (configuration). `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdmissionKey {
    gateway: [u8; 32],
    master: [u8; 32],
}

impl std::fmt::Debug for AdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdmissionKey(..)")
    }
}

fn derive(master: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut m = mac(master);
    m.update(label);
    m.finalize().into_bytes().into()
}

impl AdmissionKey {
    /// The key of 32 bytes (`RELAIS_ADMISSION_KEY`, base64).
    pub fn from_bytes(master: [u8; 32]) -> Self {
        Self { gateway: derive(&master, b"gateway"), master }
    }

    /// A fingerprint of the key (16 hex digits), which reveals nothing of it: processes of one
    /// deployment compare it to find one configured with another key.
    pub fn fingerprint(&self) -> String {
        hex::encode(&derive(&self.master, b"fingerprint")[..8])
    }

    /// The key an organisation's direct publisher tags with.
    pub fn org_key(&self, org: &str) -> [u8; 32] {
        let mut label = b"org:".to_vec();
        label.extend_from_slice(org.as_bytes());
        derive(&self.master, &label)
    }

    /// The header value the gateway sets on a message it publishes.
    pub fn gateway_tag(&self, subject: &str, payload: &[u8]) -> String {
        format!("gateway:{}", encode(&tag_mac(&self.gateway, subject, payload).finalize().into_bytes()))
    }

    /// Checks a message's header value (constant-time comparison).
    pub fn check(&self, header: Option<&str>, subject: &str, payload: &[u8]) -> Admission {
        let Some(header) = header else { return Admission::Missing };
        let Some((who, tag)) = header.split_once(':') else { return Admission::Invalid };
        let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tag.trim()) else {
            return Admission::Invalid;
        };
        let (key, admission) = match who {
            "gateway" => (self.gateway, Admission::Gateway),
            "org" => match org_of_subject(subject) {
                Some(org) => (self.org_key(org), Admission::Org),
                None => return Admission::Invalid,
            },
            _ => return Admission::Invalid,
        };
        match tag_mac(&key, subject, payload).verify_slice(&tag) {
            Ok(()) => admission,
            Err(_) => Admission::Invalid,
        }
    }
}

/// The organisation token of `relais.ev.<org>.<kind>.<id>`.
fn org_of_subject(subject: &str) -> Option<&str> {
    let rest = subject.strip_prefix("relais.ev.")?;
    let org = rest.split('.').next()?;
    (!org.is_empty()).then_some(org)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_and_org_tags_verify_and_bind_subject_and_payload() {
        let key = AdmissionKey::from_bytes([5; 32]);
        let s = "relais.ev.apo.cases.c-1";
        let t = key.gateway_tag(s, b"bytes");
        assert_eq!(key.check(Some(&t), s, b"bytes"), Admission::Gateway);
        assert_eq!(key.check(Some(&t), s, b"bytez"), Admission::Invalid);
        assert_eq!(key.check(Some(&t), "relais.ev.dsr.cases.c-1", b"bytes"), Admission::Invalid);
        assert_eq!(key.check(None, s, b"bytes"), Admission::Missing);
        let apo = org_tag(&key.org_key("apo"), s, b"bytes");
        assert_eq!(key.check(Some(&apo), s, b"bytes"), Admission::Org);
        // An organisation's key does not admit on another organisation's subjects.
        let forged = org_tag(&key.org_key("apo"), "relais.ev.dsr.cases.c-1", b"bytes");
        assert_eq!(key.check(Some(&forged), "relais.ev.dsr.cases.c-1", b"bytes"), Admission::Invalid);
        // Another admission key does not admit.
        let other = AdmissionKey::from_bytes([6; 32]);
        assert_eq!(other.check(Some(&t), s, b"bytes"), Admission::Invalid);
    }
}
