//! Property tests: envelopes of every catalogue type, with random ids, times, references and
//! texts, come back unchanged through the stored form (postcard, personal fields sealed) and
//! through CloudEvents JSON; and untrusted bytes never make decoding panic.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use relais_domain::envelope::{Envelope, PersonalState, StoredEvent, StoredEventV1};
use relais_domain::events::{CATALOGUE, EventData};
use relais_domain::ids::{AggregateRef, OrgId};
use relais_domain::reference::default_organisations;
use relais_domain::seal::{self, DataKey};
use uuid::Uuid;

/// Free-text personal fields of the catalogue that a generator may fill or leave out.
const FREE_TEXTS: &[&str] = &["note", "goals", "message", "reason_text", "outcome_note"];

fn client_ref() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._-]{1,64}"
}

fn free_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[ -~àéèçëïöü€ÀÉ\n]{0,120}")
}

/// Microsecond precision, as stored; years 1990 to 2100.
fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (631_152_000_000_000i64..4_102_444_800_000_000i64).prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
}

fn meta() -> impl Strategy<Value = String> {
    "[A-Za-z0-9 ._@:/-]{1,128}"
}

/// Random event data: a catalogue example with its client reference and free texts replaced.
fn event_data() -> impl Strategy<Value = EventData> {
    (0..CATALOGUE.len(), client_ref(), proptest::collection::vec(free_text(), FREE_TEXTS.len())).prop_map(
        |(i, client_ref, texts)| {
            let spec = &CATALOGUE[i];
            let mut json = spec.example_data();
            let obj = json.as_object_mut().unwrap();
            let has_client = obj.get("client_ref").is_some_and(|v| !v.is_null());
            if has_client {
                obj.insert("client_ref".into(), client_ref.into());
            }
            for (field, text) in FREE_TEXTS.iter().zip(texts) {
                if spec.personal_fields.contains(field) {
                    match text {
                        Some(t) if has_client => obj.insert((*field).into(), t.into()),
                        _ => obj.remove(*field),
                    };
                }
            }
            EventData::from_json(spec.name, spec.version, json).unwrap()
        },
    )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    let orgs: Vec<OrgId> = default_organisations().into_iter().map(|o| o.id).collect();
    (
        any::<u128>(),
        proptest::sample::select(orgs),
        "[A-Za-z0-9_-]{1,64}",
        time(),
        time(),
        meta(),
        proptest::option::of(meta()),
        proptest::option::of(meta()),
        event_data(),
    )
        .prop_map(|(id, org, subject_id, occurred_at, recorded_at, actor, correlation_id, causation_id, data)| {
            Envelope {
                id: Uuid::from_u128(id),
                org,
                subject: AggregateRef::new(data.spec().aggregate, &subject_id).unwrap(),
                occurred_at,
                recorded_at,
                actor,
                correlation_id,
                causation_id,
                data,
                personal: PersonalState::Present,
            }
        })
}

/// Stores an envelope as the event log does: personal fields sealed with the client's key.
fn store(envelope: &Envelope, key: &DataKey, key_id: Uuid, nonce: [u8; 24]) -> Vec<u8> {
    let (mut stored, personal): (StoredEventV1, _) = envelope.split_for_storage();
    if !personal.is_empty() {
        stored.sealed = Some(seal::seal(key, key_id, envelope.id, nonce, &personal));
    }
    StoredEvent::V1(stored).encode()
}

/// The catalogue example of `spec` in an envelope of apo, subject `<kind>/x-1`.
fn example_envelope(spec: &relais_domain::EventTypeSpec, id: Uuid) -> Envelope {
    let data = EventData::from_json(spec.name, spec.version, spec.example_data()).unwrap();
    let at = DateTime::from_timestamp_micros(1_740_000_000_000_000).unwrap();
    Envelope {
        id,
        org: OrgId::parse("apo").unwrap(),
        subject: AggregateRef::new(spec.aggregate, "x-1").unwrap(),
        occurred_at: at,
        recorded_at: at,
        actor: "sw-1".into(),
        correlation_id: None,
        causation_id: None,
        data,
        personal: PersonalState::Present,
    }
}

proptest! {
    #[test]
    fn every_catalogue_example_round_trips_through_postcard(i in 0..CATALOGUE.len()) {
        let spec = &CATALOGUE[i];
        let data = EventData::from_json(spec.name, spec.version, spec.example_data()).unwrap();
        prop_assert_eq!(EventData::decode(spec.name, spec.version, &data.encode()), Ok(data));
    }

    #[test]
    fn every_catalogue_example_round_trips_through_cloud_events(i in 0..CATALOGUE.len(), id in any::<u128>()) {
        let envelope = example_envelope(&CATALOGUE[i], Uuid::from_u128(id));
        let json = serde_json::Value::Object(envelope.to_cloud_event());
        prop_assert_eq!(Envelope::from_recorded_cloud_event(json), Ok(envelope));
    }

    #[test]
    fn random_envelopes_round_trip_through_cloud_events(envelope in envelope()) {
        let json = serde_json::Value::Object(envelope.to_cloud_event());
        // Through text too, as it travels.
        let text = serde_json::to_string(&json).unwrap();
        let back = Envelope::from_recorded_cloud_event(serde_json::from_str(&text).unwrap());
        prop_assert_eq!(back, Ok(envelope));
    }

    #[test]
    fn random_envelopes_round_trip_through_the_stored_form_with_sealed_personal_fields(
        envelope in envelope(),
        key in any::<[u8; 32]>(),
        key_id in any::<u128>(),
        nonce in any::<[u8; 24]>(),
    ) {
        let key = DataKey::from_bytes(key);
        let key_id = Uuid::from_u128(key_id);
        let bytes = store(&envelope, &key, key_id, nonce);
        let stored = StoredEvent::decode(&bytes).unwrap().into_v1();
        let personal = match &stored.sealed {
            Some(sealed) => Some(seal::open(&key, stored.id, sealed).unwrap()),
            None => None,
        };
        prop_assert_eq!(stored.open(personal), Ok(envelope.clone()));

        // Without the key (erased), the statistical fields remain and the personal ones are gone.
        let erased = stored.open(None).unwrap();
        if stored.sealed.is_some() {
            prop_assert_eq!(erased.personal, PersonalState::Erased);
            let data = erased.data.to_json();
            for field in envelope.data.spec().personal_fields {
                prop_assert!(data.get(*field).is_none_or(|v| v.is_null() || v == ""), "{} in the clear", field);
            }
            let ce = erased.to_cloud_event();
            prop_assert_eq!(ce.get("personaldata").and_then(|v| v.as_str()), Some("erased"));
        } else {
            prop_assert_eq!(erased, envelope);
        }
    }

    #[test]
    fn stored_bytes_hold_no_personal_value_in_the_clear(envelope in envelope()) {
        let bytes = store(&envelope, &DataKey::from_bytes([9; 32]), Uuid::from_u128(1), [3; 24]);
        let mut probe = envelope.data.clone();
        for (_, value) in probe.take_personal().0 {
            if value.len() >= 8 {
                prop_assert!(!bytes.windows(value.len()).any(|w| w == value.as_bytes()), "{} in the clear", value);
            }
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(stored) = StoredEvent::decode(&bytes) {
            let _ = stored.into_v1().open(None);
        }
        for spec in CATALOGUE {
            for version in std::iter::once(spec.version).chain(spec.legacy_versions.iter().copied()) {
                let _ = EventData::decode(spec.name, version, &bytes);
            }
        }
    }

    #[test]
    fn decoding_truncated_or_altered_stored_events_never_panics(
        envelope in envelope(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let bytes = store(&envelope, &DataKey::from_bytes([9; 32]), Uuid::from_u128(1), [3; 24]);
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(StoredEvent::decode(truncated).is_err());
        let mut altered = bytes.clone();
        let i = flip.index(altered.len());
        altered[i] ^= 1 << bit;
        if let Ok(stored) = StoredEvent::decode(&altered) {
            let _ = stored.into_v1().open(None);
        }
        let stored = StoredEvent::decode(&bytes).unwrap().into_v1();
        let _ = EventData::decode(&stored.event_type, stored.schema_version, truncated);
    }
}

/// The stored form of the first catalogue type without personal fields, as a direct publisher
/// could write it.
fn stored_case_event() -> StoredEventV1 {
    let spec = CATALOGUE.iter().find(|s| s.personal_fields.is_empty()).unwrap();
    example_envelope(spec, Uuid::from_u128(7)).split_for_storage().0
}

#[test]
fn a_stored_event_with_metadata_the_gateway_refuses_opens_but_is_not_admissible() {
    // Given events published straight to the log, past the gateway's checks
    let good = stored_case_event();
    assert_eq!(good.open(None).map(|e| e.check_admissible()), Ok(Ok(())));
    let nul_actor = StoredEventV1 { actor: "sw\0-1".into(), ..good.clone() };
    let empty_actor = StoredEventV1 { actor: String::new(), ..good.clone() };
    let long_correlation = StoredEventV1 { correlation_id: Some("c".repeat(129)), ..good.clone() };
    let control_causation = StoredEventV1 { causation_id: Some("a\u{7}b".into()), ..good.clone() };
    // When the validator judges them, then each opens (what was admitted once stays readable)
    // and is refused at its attribute
    for (stored, pointer) in [
        (nul_actor, "/actor"),
        (empty_actor, "/actor"),
        (long_correlation, "/correlationid"),
        (control_causation, "/causationid"),
    ] {
        let envelope = stored.open(None).expect("opens");
        match envelope.check_admissible() {
            Err(relais_domain::envelope::EnvelopeError::Invalid { pointer: p, .. }) => assert_eq!(p, pointer),
            other => panic!("{pointer}: {other:?}"),
        }
    }
}

#[test]
fn an_id_of_version_8_is_admissible_only_on_an_erasure() {
    // Given an id of version 8, the kind Relais derives for an erasure from its key
    let v8 = Uuid::from_u128(0x0123_4567_89ab_8def_8123_4567_89ab_cdef);
    assert_eq!(v8.get_version_num(), 8);
    let erased = CATALOGUE.iter().find(|s| s.name == "relais.client.erased").expect("erasure type");
    // When a case event or an erasure carries it
    let case_event = StoredEventV1 { id: v8, ..stored_case_event() };
    let erasure = example_envelope(erased, v8);
    // Then only the erasure may take it, and the case event still opens (reading what was
    // admitted once does not refuse it)
    let opened = case_event.open(None).expect("opens");
    match opened.check_id() {
        Err(relais_domain::envelope::EnvelopeError::Invalid { pointer, .. }) => assert_eq!(pointer, "/id"),
        other => panic!("{other:?}"),
    }
    assert_eq!(opened.check_admissible(), Ok(()));
    assert_eq!(erasure.check_id(), Ok(()));
}

#[test]
fn a_stored_event_with_a_time_no_cloud_event_can_write_is_not_admissible() {
    use relais_domain::envelope::{EARLIEST_TIME_US, LATEST_TIME_US};
    let good = stored_case_event();
    for (occurred, recorded, admissible) in [
        (EARLIEST_TIME_US, LATEST_TIME_US, true),
        (EARLIEST_TIME_US - 1, good.recorded_at_us, false),
        (good.occurred_at_us, LATEST_TIME_US + 1, false),
        (DateTime::<Utc>::MAX_UTC.timestamp_micros(), good.recorded_at_us, false),
        (DateTime::<Utc>::MIN_UTC.timestamp_micros(), good.recorded_at_us, false),
    ] {
        let stored = StoredEventV1 { occurred_at_us: occurred, recorded_at_us: recorded, ..good.clone() };
        let envelope = stored.open(None).expect("opens");
        assert_eq!(envelope.check_admissible().is_ok(), admissible, "occurred {occurred}, recorded {recorded}");
    }
}

/// Whether a CloudEvent of an example with `time` is accepted, else the pointer it is
/// refused at.
fn judged_time(time: &str) -> Result<(), String> {
    let spec = CATALOGUE.iter().find(|s| s.personal_fields.is_empty()).unwrap();
    let event = serde_json::json!({
        "specversion": "1.0", "id": Uuid::from_u128(9).to_string(), "source": "/orgs/apo",
        "type": spec.name, "subject": format!("{}/x-1", spec.aggregate.as_str()),
        "time": time, "data": spec.example_data(),
    });
    let now = DateTime::from_timestamp_micros(1_740_000_000_000_000).unwrap();
    match Envelope::from_cloud_event(event, now, "token:t") {
        Ok(_) => Ok(()),
        Err(relais_domain::envelope::EnvelopeError::Invalid { pointer, .. }) => Err(pointer),
        Err(other) => Err(other.to_string()),
    }
}

#[test]
fn a_cloud_event_whose_time_in_utc_falls_past_the_year_9999_is_refused_at_time() {
    assert_eq!(judged_time("9999-12-31T23:59:59Z"), Ok(()));
    assert_eq!(judged_time("9999-12-31T23:59:59-05:00"), Err("/time".into()));
}

#[test]
fn the_brussels_date_of_the_last_representable_moment_does_not_panic() {
    let last = DateTime::<Utc>::MAX_UTC;
    assert_eq!(relais_domain::aggregates::brussels_date(last), last.date_naive());
}

/// Every spec whose example is accepted as a CloudEvent, with its example's `data` edited by
/// `edit` (given each top-level field and its example value): the edits `edit` made, each with
/// what became of it.
fn judged_edits(
    edit: impl Fn(&str, &serde_json::Value) -> Option<serde_json::Value>,
) -> Vec<(String, String, Result<(), String>)> {
    let now = DateTime::from_timestamp_micros(1_740_000_000_000_000).unwrap();
    let event = |spec: &relais_domain::EventTypeSpec, data: serde_json::Value| {
        serde_json::json!({
            "specversion": "1.0", "id": Uuid::from_u128(11).to_string(), "source": "/orgs/apo",
            "type": spec.name, "subject": format!("{}/x-1", spec.aggregate.as_str()),
            "time": "2025-03-01T10:00:00Z", "data": data,
        })
    };
    let mut judged = Vec::new();
    for spec in CATALOGUE.iter() {
        let example = spec.example_data();
        if Envelope::from_cloud_event(event(spec, example.clone()), now, "token:t").is_err() {
            continue;
        }
        let Some(fields) = example.as_object() else { continue };
        for (field, value) in fields {
            let Some(edited) = edit(field, value) else { continue };
            let mut data = example.clone();
            data[field.as_str()] = edited;
            let result = match Envelope::from_cloud_event(event(spec, data), now, "token:t") {
                Ok(_) => Ok(()),
                Err(relais_domain::envelope::EnvelopeError::Invalid { pointer, .. }) => Err(pointer),
                Err(other) => Err(other.to_string()),
            };
            judged.push((spec.name.to_string(), field.clone(), result));
        }
    }
    judged
}

fn is_day(value: &serde_json::Value) -> bool {
    value.as_str().is_some_and(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
}

#[test]
fn a_day_outside_the_years_1_to_9999_is_refused_at_its_field() {
    // PostgreSQL stores no day before 4714 BC, and writes those before year 1 in JSON as
    // `... BC`: such a day, accepted, would stop every view that stores it, batch after batch.
    for (day, accepted) in [
        ("-5000-01-01", false),
        ("0000-12-31", false),
        ("10000-01-01", false),
        ("0001-01-01", true),
        ("9999-12-31", true),
    ] {
        let judged = judged_edits(|_, v| is_day(v).then(|| serde_json::json!(day)));
        assert!(judged.len() >= 10, "every event type with a day is covered: {judged:?}");
        for (name, field, result) in judged {
            match accepted {
                true => assert_eq!(result, Ok(()), "{name} {field} {day}"),
                false => assert_eq!(result, Err(format!("/data/{field}")), "{name} {field} {day}"),
            }
        }
    }
}

#[test]
fn a_list_of_codes_holds_each_entry_once_and_at_most_64() {
    let first = |v: &serde_json::Value| v.as_array().and_then(|a| a.first()).cloned();
    let twice = judged_edits(|_, v| first(v).map(|e| serde_json::json!([e.clone(), e])));
    assert!(twice.len() >= 10, "every event type with a list is covered: {twice:?}");
    for (name, field, result) in twice {
        assert_eq!(result, Err(format!("/data/{field}/1")), "{name} {field}: an entry listed twice");
    }
    let many = judged_edits(|_, v| first(v).map(|e| serde_json::Value::Array(vec![e; 65])));
    for (name, field, result) in many {
        assert_eq!(result, Err(format!("/data/{field}")), "{name} {field}: 65 entries");
    }
}

#[test]
fn a_cloud_event_of_a_time_before_the_year_1_is_refused_at_time() {
    // PostgreSQL writes year 0 in JSON as `0001-... BC`, which no view could read back.
    assert_eq!(judged_time("0001-01-01T00:00:00Z"), Ok(()));
    assert_eq!(judged_time("0000-12-31T23:59:59Z"), Err("/time".into()));
}
