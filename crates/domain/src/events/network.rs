//! The client's relational network: contact with family facilitated, relatives supported.
//! Subject `cases/<case id>` (the case of the client, usually a detainee).
//!
//! Relatives are recorded by their relation to the client only: they have no reference of
//! their own here, and nothing may identify them.

use super::{DataError, EventPayload, check_client_ref, check_distinct, check_free_text};
use crate::reference::{LifeDomain, Relation, code_list};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

code_list! {
    /// The form a family contact took.
    ContactForm {
        /// A visit in prison.
        Visit = "visit": ("Bezoek", "Visite", "Visit"),
        /// A telephone call.
        Phone = "phone": ("Telefoon", "Téléphone", "Phone call"),
        /// A video call.
        Video = "video": ("Videogesprek", "Appel vidéo", "Video call"),
        /// A letter.
        Letter = "letter": ("Brief", "Lettre", "Letter"),
        /// A meeting during furlough or leave.
        MeetingDuringLeave = "meeting_during_leave": ("Ontmoeting tijdens verlof", "Rencontre pendant un congé", "Meeting during leave"),
    }
}

/// The service facilitated contact between the client and a relative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyContactFacilitated {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The relative's relation to the client.
    pub relation: Relation,
    /// The form of the contact.
    pub form: ContactForm,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for FamilyContactFacilitated {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), relation: Relation::Child, form: ContactForm::Visit, note: None }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A relative of the client was supported (support for family and relatives of detainees).
/// `client_ref` is the client's (the detainee's); the relative is named by relation only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RelativeSupported {
    /// The organisation's pseudonymous reference of the client whose relative was supported.
    pub client_ref: String,
    /// The relative's relation to the client.
    pub relation: Relation,
    /// The life domains the support was about (may be empty, no repeats).
    #[serde(default)]
    pub life_domains: Vec<LifeDomain>,
    /// A short note; must not identify the relative.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for RelativeSupported {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            relation: Relation::Partner,
            life_domains: vec![LifeDomain::FamilyRelations, LifeDomain::FinancesDebts],
            note: Some("Partner geïnformeerd over bezoekregeling".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 0)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}
