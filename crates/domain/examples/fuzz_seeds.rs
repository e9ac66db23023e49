//! Writes the seed corpus of the `decode_stored` fuzz target: one stored event per catalogue
//! type (from its example, personal fields sealed with a fixed test key), and a few that must
//! be refused. Deterministic: same catalogue, same bytes.
//!
//! `cargo run -p relais-domain --example fuzz_seeds -- crates/domain/fuzz/corpus/decode_stored`

use chrono::DateTime;
use relais_domain::envelope::{Envelope, PersonalState, StoredEvent, StoredEventV1};
use relais_domain::events::{CATALOGUE, EventData};
use relais_domain::ids::{AggregateRef, OrgId};
use relais_domain::seal::{self, DataKey};
use std::path::PathBuf;
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds <corpus dir>")?);
    std::fs::create_dir_all(&dir)?;
    let key = DataKey::from_bytes([42; 32]);
    let at = DateTime::from_timestamp_micros(1_740_000_000_000_000).ok_or("time")?;
    let mut first_valid: Option<Vec<u8>> = None;
    for (i, spec) in CATALOGUE.iter().enumerate() {
        let data = EventData::from_json(spec.name, spec.version, spec.example_data())?;
        let envelope = Envelope {
            id: Uuid::from_u128(0x5eed_0000 + i as u128),
            org: OrgId::parse("apo")?,
            subject: AggregateRef::new(spec.aggregate, &format!("seed-{i}"))?,
            occurred_at: at,
            recorded_at: at,
            actor: "seed".into(),
            correlation_id: Some("corr-1".into()),
            causation_id: None,
            data,
            personal: PersonalState::Present,
        };
        let (mut stored, personal) = envelope.split_for_storage();
        if !personal.is_empty() {
            stored.sealed = Some(seal::seal(&key, Uuid::from_u128(7), envelope.id, [i as u8; 24], &personal));
        }
        let bytes = StoredEvent::V1(stored).encode();
        std::fs::write(dir.join(format!("valid-{}.bin", spec.name)), &bytes)?;
        first_valid.get_or_insert(bytes);
    }

    let valid = first_valid.ok_or("empty catalogue")?;
    std::fs::write(dir.join("invalid-empty.bin"), [])?;
    std::fs::write(dir.join("invalid-truncated.bin"), &valid[..valid.len() / 2])?;
    let mut trailing = valid.clone();
    trailing.push(0);
    std::fs::write(dir.join("invalid-trailing-byte.bin"), trailing)?;
    std::fs::write(dir.join("invalid-unknown-format.bin"), [1u8, 0, 0, 0])?;

    let mut stored = StoredEvent::decode(&valid)?.into_v1();
    let body = |s: &StoredEventV1| StoredEvent::V1(s.clone()).encode();
    let original = stored.clone();
    stored.event_type = "relais.nope.done".into();
    std::fs::write(dir.join("invalid-unknown-type.bin"), body(&stored))?;
    stored = original.clone();
    stored.schema_version = 99;
    std::fs::write(dir.join("invalid-unknown-version.bin"), body(&stored))?;
    stored = original.clone();
    stored.subject = "referrals/seed-0".into();
    std::fs::write(dir.join("invalid-subject-of-another-aggregate.bin"), body(&stored))?;
    stored = original.clone();
    stored.org = "Not An Org".into();
    std::fs::write(dir.join("invalid-org.bin"), body(&stored))?;
    stored = original.clone();
    stored.occurred_at_us = i64::MAX;
    std::fs::write(dir.join("invalid-time-out-of-range.bin"), body(&stored))?;
    stored = original;
    stored.data.truncate(1);
    std::fs::write(dir.join("invalid-data-truncated.bin"), body(&stored))?;
    println!("wrote {} valid and 10 invalid seeds to {}", CATALOGUE.len(), dir.display());
    Ok(())
}
