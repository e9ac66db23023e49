//! The catalogue is consistent: every type's example is valid and round-trips, its schema
//! classes every property, its personal fields exist, and stored old versions still read.

#![allow(clippy::unwrap_used)]

use relais_domain::AggregateKind;
use relais_domain::events::{
    CATALOGUE, DecodeError, EventData, Interpreter, InterventionRecordedV1, PersonalFields, spec,
};
use relais_domain::reference::{InterventionMode, Language, LifeDomain};
use std::collections::BTreeSet;

fn example(name: &str) -> EventData {
    let s = spec(name).unwrap();
    EventData::from_json(s.name, s.version, s.example_data()).unwrap()
}

#[test]
fn every_type_name_is_unique_and_reads_relais_area_past_tense() {
    let mut names = BTreeSet::new();
    for s in CATALOGUE {
        assert!(names.insert(s.name), "{} twice", s.name);
        let parts: Vec<&str> = s.name.split('.').collect();
        assert_eq!(parts.len(), 3, "{}", s.name);
        assert_eq!(parts[0], "relais");
        assert!(parts[1..].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
        let verb = parts[2];
        assert!(
            verb.split('_').any(|w| w.ends_with("ed") || ["held", "set", "given", "withdrawn", "made"].contains(&w)),
            "{} is not past tense",
            s.name
        );
        for title in [s.titles.nl, s.titles.fr, s.titles.en] {
            assert!(!title.is_empty(), "{} lacks a title", s.name);
        }
    }
}

#[test]
fn every_example_validates_and_reads_back_from_its_own_json() {
    for s in CATALOGUE {
        let data = example(s.name);
        assert_eq!(data.event_type(), s.name);
        assert_eq!(data.validate(), Ok(()), "{}", s.name);
        assert_eq!(data.to_json(), s.example_data(), "{}", s.name);
    }
}

#[test]
fn every_schema_property_carries_its_class_and_every_personal_field_is_a_property() {
    for s in CATALOGUE {
        let schema = s.schema();
        let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{} has no properties", s.name));
        assert!(!props.is_empty(), "{}", s.name);
        for (name, prop) in props {
            let class = prop["x-relais-class"].as_str().unwrap_or_else(|| panic!("{}/{name} has no class", s.name));
            let expected = if s.personal_fields.contains(&name.as_str()) { "personal" } else { "statistical" };
            assert_eq!(class, expected, "{}/{name}", s.name);
        }
        for field in s.personal_fields {
            assert!(props.contains_key(*field), "{}: personal field {field} is not in the schema", s.name);
        }
        assert_eq!(schema["additionalProperties"], false, "{} must refuse unknown fields", s.name);
    }
}

#[test]
fn types_with_personal_fields_are_about_a_client_and_name_the_client_ref_personal() {
    for s in CATALOGUE {
        let props = s.schema()["properties"].as_object().cloned().unwrap_or_default();
        if !s.personal_fields.is_empty() {
            assert!(s.personal_fields.contains(&"client_ref"), "{} has personal fields but no client_ref", s.name);
        }
        if props.contains_key("client_ref") {
            assert!(s.personal_fields.contains(&"client_ref"), "{}: client_ref must be personal", s.name);
            assert!(example(s.name).client_ref().is_some(), "{}: the example names its client", s.name);
        }
    }
}

#[test]
fn free_text_fields_are_personal_unless_documented_organisational() {
    let organisational = ["title", "description", "evaluation_note"];
    for s in CATALOGUE {
        let props = s.schema()["properties"].as_object().cloned().unwrap_or_default();
        for name in props.keys() {
            let looks_free = ["note", "goals", "message", "reason_text", "outcome_note", "title", "description"]
                .iter()
                .any(|w| name.ends_with(w));
            if looks_free && !organisational.contains(&name.as_str()) {
                assert!(s.personal_fields.contains(&name.as_str()), "{}/{name} is free text", s.name);
            }
        }
    }
}

#[test]
fn aggregates_match_categories() {
    use relais_domain::events::Category;
    for s in CATALOGUE {
        let expected = match s.category {
            Category::Guidance | Category::Situation | Category::Network | Category::Consent => AggregateKind::Cases,
            Category::Referral => AggregateKind::Referrals,
            Category::GroupActivity => AggregateKind::Activities,
            Category::Structural => AggregateKind::Signals,
            Category::Privacy => AggregateKind::Clients,
        };
        assert_eq!(s.aggregate, expected, "{}", s.name);
    }
}

#[test]
fn every_example_round_trips_through_postcard_with_and_without_its_optional_fields() {
    for s in CATALOGUE {
        let full = example(s.name);
        assert_eq!(EventData::decode(s.name, s.version, &full.encode()), Ok(full.clone()), "{}", s.name);

        // The same with every optional field left out: postcard is positional, so a skipped
        // field would shift the bytes.
        let schema = s.schema();
        let required: BTreeSet<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        let mut json = s.example_data();
        json.as_object_mut().unwrap().retain(|k, _| required.contains(k.as_str()));
        let minimal = EventData::from_json(s.name, s.version, json.clone())
            .unwrap_or_else(|e| panic!("{}: only the required fields: {e}", s.name));
        assert_eq!(EventData::decode(s.name, s.version, &minimal.encode()), Ok(minimal.clone()), "{}", s.name);
        let written = minimal.to_json();
        assert!(written.as_object().unwrap().values().all(|v| !v.is_null()), "{}: unset fields are left out", s.name);
        assert_eq!(EventData::from_json(s.name, s.version, written), Ok(minimal), "{}", s.name);
    }
}

#[test]
fn taking_and_putting_back_personal_fields_is_lossless_and_leaves_only_statistics() {
    for s in CATALOGUE {
        let full = example(s.name);
        let mut stripped = full.clone();
        let personal = stripped.take_personal();
        let json = stripped.to_json();
        for field in s.personal_fields {
            let v = &json[*field];
            assert!(v.is_null() || v == "", "{}: {field} left in the clear", s.name);
        }
        stripped.put_personal(personal);
        assert_eq!(stripped, full, "{}", s.name);
    }
}

#[test]
fn a_stored_version_1_intervention_still_decodes_after_the_version_2_change() {
    let v1 = InterventionRecordedV1 {
        client_ref: "cl-2019-0007".into(),
        mode: InterventionMode::Informing,
        life_domains: vec![LifeDomain::JusticeProcedure],
        duration_minutes: 30,
        language: Language::parse("nl").unwrap(),
        interpreter_used: true,
        note: None,
    };
    let bytes = postcard::to_allocvec(&v1).unwrap();
    let EventData::InterventionRecorded(v2) = EventData::decode("relais.intervention.recorded", 1, &bytes).unwrap()
    else {
        panic!("not an intervention");
    };
    assert_eq!(v2.interpreter, Interpreter::Unspecified);
    assert_eq!(v2.client_ref, "cl-2019-0007");
    assert_eq!(v2.duration_minutes, 30);

    let without = InterventionRecordedV1 { interpreter_used: false, note: Some("kort".into()), ..v1 };
    let bytes = postcard::to_allocvec(&without).unwrap();
    let data = EventData::decode("relais.intervention.recorded", 1, &bytes).unwrap();
    let EventData::InterventionRecorded(v2) = &data else { panic!("not an intervention") };
    assert_eq!(v2.interpreter, Interpreter::None);
    assert_eq!(v2.note.as_deref(), Some("kort"));
    // It is written back at version 2.
    assert_eq!(data.spec().version, 2);
    assert_eq!(EventData::decode("relais.intervention.recorded", 2, &data.encode()), Ok(data.clone()));
}

#[test]
fn a_version_1_intervention_in_json_is_upcast_too() {
    let json = serde_json::json!({
        "client_ref": "cl-1", "mode": "informing", "life_domains": ["housing"],
        "duration_minutes": 20, "language": "fr", "interpreter_used": false
    });
    let data = EventData::from_json("relais.intervention.recorded", 1, json).unwrap();
    assert_eq!(data.to_json()["interpreter"], "none");
}

#[test]
fn unknown_types_and_versions_are_errors() {
    assert_eq!(EventData::decode("relais.nope.done", 1, &[]), Err(DecodeError::UnknownType("relais.nope.done".into())));
    assert_eq!(
        EventData::decode("relais.guidance.requested", 9, &[]),
        Err(DecodeError::UnknownVersion { event_type: "relais.guidance.requested".into(), version: 9 })
    );
}

#[test]
fn json_errors_point_at_the_offending_field() {
    let mut json = spec("relais.referral.made").unwrap().example_data();
    json["destination"] = serde_json::json!({ "organisation": "Not An Org" });
    let e = EventData::from_json("relais.referral.made", 1, json).unwrap_err();
    assert!(e.pointer.starts_with("/destination"), "{e}");

    let mut json = spec("relais.consent.given").unwrap().example_data();
    json["linkage_key"] = "ABC".into();
    let e = EventData::from_json("relais.consent.given", 1, json).unwrap_err();
    assert_eq!(e.pointer, "/linkage_key");

    let mut json = spec("relais.guidance.requested").unwrap().example_data();
    json["name"] = "Jan Janssens".into();
    let e = EventData::from_json("relais.guidance.requested", 1, json).unwrap_err();
    assert_eq!(e.pointer, "/name");
}

#[test]
fn a_linkage_key_is_sealed_like_any_personal_field() {
    let mut json = spec("relais.consent.given").unwrap().example_data();
    json["scope"] = "continuity_monitor".into();
    json["linkage_key"] = "0123456789abcdef".repeat(4).into();
    let full = EventData::from_json("relais.consent.given", 1, json).unwrap();
    assert_eq!(full.validate(), Ok(()));
    let mut stripped = full.clone();
    let personal = stripped.take_personal();
    assert_eq!(personal.get("linkage_key"), Some("0123456789abcdef".repeat(4).as_str()));
    assert!(stripped.to_json().get("linkage_key").is_none());
    stripped.put_personal(personal);
    assert_eq!(stripped, full);
    // A value that is not a key leaves the field empty rather than failing.
    stripped.put_personal(PersonalFields(vec![("linkage_key".into(), "nope".into())]));
    assert!(stripped.to_json().get("linkage_key").is_none());
}

#[test]
fn reference_data_holds_every_code_list_the_schemas_use() {
    let data = relais_domain::reference::reference_data();
    for list in ["prisons", "release_kinds", "outside_services", "target_groups", "activity_kinds", "relations"] {
        assert!(data[list].as_array().is_some_and(|l| !l.is_empty()), "{list}");
    }
    assert!(data["organisations"].as_array().is_some_and(|l| l.len() == 8));
}

#[test]
fn the_organisations_an_event_names_are_found_at_their_pointers() {
    let mut naming = BTreeSet::new();
    for s in CATALOGUE {
        let json = s.example_data();
        let data = EventData::from_json(s.name, s.version, json.clone()).unwrap();
        for (pointer, org) in data.organisations() {
            assert_eq!(json.pointer(&pointer).and_then(|v| v.as_str()), Some(org.as_str()), "{} {pointer}", s.name);
            naming.insert(s.name);
        }
    }
    // The examples name an organisation in a referral, both consent events and an activity.
    for name in ["relais.referral.made", "relais.consent.given", "relais.consent.withdrawn", "relais.activity.planned"]
    {
        assert!(naming.contains(name), "{name} names no organisation: {naming:?}");
    }
}
