//! The client's legal and detention situation: detention, transfers, release, furlough and
//! leave, escorted outings. Subject `cases/<case id>`.
//!
//! Dates are calendar dates (`YYYY-MM-DD`): the day a detention started or a release takes
//! place may differ from the moment the service records it.

use super::{DataError, EventPayload, check_client_ref, check_date, check_free_text};
use crate::reference::{LegalStatus, Prison, ReleaseKind, code_list};
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

code_list! {
    /// What a furlough or prison leave (uitgaansvergunning, penitentiair verlof) is for.
    LeavePurpose {
        /// Returning home to the family.
        FamilyReturn = "family_return": ("Terugkeer naar het gezin", "Retour en famille", "Return to the family"),
        /// Looking for or starting a job.
        Job = "job": ("Werk", "Emploi", "Job"),
        /// Looking for housing.
        Housing = "housing": ("Huisvesting", "Logement", "Housing"),
        /// A court appearance.
        Court = "court": ("Rechtbank", "Tribunal", "Court"),
        /// Medical care.
        Medical = "medical": ("Medisch", "Médical", "Medical"),
        /// Another purpose.
        Other = "other": ("Ander doel", "Autre motif", "Other purpose"),
    }
}

code_list! {
    /// What an escorted outing is for.
    OutingPurpose {
        /// A court hearing.
        CourtHearing = "court_hearing": ("Zitting van de rechtbank", "Audience au tribunal", "Court hearing"),
        /// A medical appointment.
        MedicalAppointment = "medical_appointment": ("Medische afspraak", "Rendez-vous médical", "Medical appointment"),
    }
}

/// The client's detention or internment started (or the service learnt of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetentionStarted {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// Suspect, convict or internee.
    pub legal_status: LegalStatus,
    /// The prison.
    pub prison: Prison,
    /// The day detention started.
    pub started_on: NaiveDate,
}

impl EventPayload for DetentionStarted {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            legal_status: LegalStatus::Suspect,
            prison: Prison::Haren,
            started_on: NaiveDate::from_ymd_opt(2025, 1, 14).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("started_on", Some(&self.started_on))?;
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The detainee was transferred to another prison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetaineeTransferred {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The prison the detainee now is in.
    pub to_prison: Prison,
    /// The day of the transfer.
    pub transferred_on: NaiveDate,
}

impl EventPayload for DetaineeTransferred {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            to_prison: Prison::SaintGilles,
            transferred_on: NaiveDate::from_ymd_opt(2025, 2, 3).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("transferred_on", Some(&self.transferred_on))?;
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The client's legal status changed (a suspect was convicted, an internment was ordered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalStatusChanged {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The new legal status.
    pub legal_status: LegalStatus,
}

impl EventPayload for LegalStatusChanged {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), legal_status: LegalStatus::Convict }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A release date is known: guidance prepares it (housing, income, after-care).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseScheduled {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// How the client will leave prison.
    pub kind: ReleaseKind,
    /// The expected day of release.
    pub release_on: NaiveDate,
}

impl EventPayload for ReleaseScheduled {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            kind: ReleaseKind::ConditionalRelease,
            release_on: NaiveDate::from_ymd_opt(2025, 10, 1).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("release_on", Some(&self.release_on))?;
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The detainee left prison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetaineeReleased {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// How the client left prison.
    pub kind: ReleaseKind,
    /// The day of release.
    pub released_on: NaiveDate,
}

impl EventPayload for DetaineeReleased {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            kind: ReleaseKind::ConditionalRelease,
            released_on: NaiveDate::from_ymd_opt(2025, 10, 1).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("released_on", Some(&self.released_on))?;
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A furlough or prison leave was prepared with the detainee (for example a return home).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeavePrepared {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// What the leave is for.
    pub purpose: LeavePurpose,
    /// The day of the leave.
    pub leave_on: NaiveDate,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for LeavePrepared {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            purpose: LeavePurpose::FamilyReturn,
            leave_on: NaiveDate::from_ymd_opt(2025, 5, 17).unwrap_or_default(),
            note: Some("Eerste uitgaansvergunning; gesprek met partner vooraf".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("leave_on", Some(&self.leave_on))?;
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A detainee on leave was escorted to a court hearing or a medical appointment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutingEscorted {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// What the outing was for.
    pub purpose: OutingPurpose,
    /// The day of the outing.
    pub outing_on: NaiveDate,
}

impl EventPayload for OutingEscorted {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            purpose: OutingPurpose::CourtHearing,
            outing_on: NaiveDate::from_ymd_opt(2025, 4, 8).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("outing_on", Some(&self.outing_on))?;
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}
