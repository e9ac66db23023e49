//! Stored bytes are untrusted input (a damaged store, a hostile restore): decoding them and
//! opening the envelope must give an error, never a panic or an unbounded allocation.
//! The same path runs over the committed corpus in `tests/corpus_replay.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relais_domain::StoredEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(stored) = StoredEvent::decode(data) {
        let _ = stored.into_v1().open(None);
    }
});
