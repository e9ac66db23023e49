//! Replays the committed fuzz corpus (`fuzz/corpus/decode_stored/`) through the fuzz target's
//! path, `StoredEvent::decode` then `.into_v1().open(None)`, so the ordinary test suite covers
//! it without cargo-fuzz: no file may panic, `valid-*` seeds must open and `invalid-*` seeds
//! must be refused, and every catalogue type has a seed.

#![allow(clippy::unwrap_used)]

use relais_domain::envelope::{Envelope, EnvelopeError, PersonalState, StoredEvent};
use relais_domain::events::CATALOGUE;
use std::path::PathBuf;

/// The fuzz target's body.
fn decode_stored(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    StoredEvent::decode(bytes).and_then(|stored| stored.into_v1().open(None))
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode_stored");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_decodes_or_is_refused_without_panicking() {
    let files = corpus();
    assert!(files.len() > CATALOGUE.len(), "the corpus lost its seeds");
    for (name, bytes) in &files {
        let result = decode_stored(bytes);
        if name.starts_with("valid-") {
            let envelope = result.unwrap_or_else(|e| panic!("{name}: {e}"));
            // Without the client's key, an event with sealed personal fields reads as erased.
            let sealed = StoredEvent::decode(bytes).unwrap().v1().sealed.is_some();
            let expected = if sealed { PersonalState::Erased } else { PersonalState::Present };
            assert_eq!(envelope.personal, expected, "{name}");
            assert_eq!(format!("valid-{}.bin", envelope.data.event_type()), *name);
        } else if name.starts_with("invalid-") {
            assert!(result.is_err(), "{name} was accepted");
        }
    }
}

#[test]
fn every_catalogue_type_has_a_valid_seed() {
    let names: Vec<String> = corpus().into_iter().map(|(n, _)| n).collect();
    for spec in CATALOGUE {
        let seed = format!("valid-{}.bin", spec.name);
        assert!(
            names.contains(&seed),
            "no seed {seed}: run `cargo run -p relais-domain --example fuzz_seeds -- crates/domain/fuzz/corpus/decode_stored`"
        );
    }
}
