//! Reference data, as data: every code with its NL/FR/EN label.
//!
//! Codes are stable (they are stored); labels may be improved at any time.

use crate::labels::Labels;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A code list: each value with its labels, for the catalogue and for people.
pub trait CodeList: Sized + Copy + 'static {
    /// Every value, in a stable order.
    const ALL: &'static [Self];
    /// The stored code (the serde name).
    fn code(self) -> &'static str;
    /// The NL/FR/EN labels.
    fn labels(self) -> Labels;
}

/// Declares a code list enum with its codes and labels in one place.
macro_rules! code_list {
    ($(#[$meta:meta])* $name:ident { $( $(#[$vmeta:meta])* $variant:ident = $code:literal : ($nl:literal, $fr:literal, $en:literal) ),* $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize, ::schemars::JsonSchema,
        )]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $code)]
                $variant,
            )*
        }

        impl $crate::reference::CodeList for $name {
            const ALL: &'static [Self] = &[ $( Self::$variant ),* ];
            fn code(self) -> &'static str {
                match self { $( Self::$variant => $code, )* }
            }
            fn labels(self) -> $crate::labels::Labels {
                match self { $( Self::$variant => $crate::labels::Labels::new($nl, $fr, $en), )* }
            }
        }
    };
}
pub(crate) use code_list;

code_list! {
    /// The eight intervention modes (interventiewijzen) of the services.
    InterventionMode {
        /// Listening ear and psychosocial support (not therapy).
        ListeningSupport = "listening_support": ("Luisterend oor en psychosociale ondersteuning", "Écoute et soutien psychosocial", "Listening ear and psychosocial support"),
        /// Informing about investigation, trial, sentence execution, internment.
        Informing = "informing": ("Informeren", "Information", "Informing"),
        /// Intensive guidance and follow-up of complex problems.
        IntensiveGuidance = "intensive_guidance": ("Intensieve begeleiding", "Accompagnement intensif", "Intensive guidance and follow-up"),
        /// Assistance in contacts with actors and services, escorting included.
        ContactAssistance = "contact_assistance": ("Bijstand bij contacten met actoren en diensten", "Assistance dans les contacts avec les acteurs et services", "Assistance in contacts with actors and services"),
        /// Maintaining or strengthening the relational network.
        RelationalNetwork = "relational_network": ("Relationeel netwerk onderhouden of versterken", "Maintien ou renforcement du réseau relationnel", "Maintaining or strengthening the relational network"),
        /// Designing, planning, motivating, evaluating and adjusting a plan.
        Planning = "planning": ("Ontwerpen, plannen, motiveren, evalueren en bijsturen", "Conception, planification, motivation, évaluation et ajustement", "Designing, planning, motivating, evaluating and adjusting"),
        /// Practical services and urgent help requests.
        PracticalHelp = "practical_help": ("Praktische dienstverlening en dringende hulpvragen", "Services pratiques et demandes d'aide urgentes", "Practical services and urgent help requests"),
        /// Facilitating access to other help (referral) and coordinating it.
        AccessToHelp = "access_to_help": ("Toeleiding naar andere hulp", "Orientation vers d'autres aides", "Facilitating access to other help"),
    }
}

code_list! {
    /// The life domains (interventiedomeinen) guidance works on.
    LifeDomain {
        /// The justice procedure and sentence execution.
        JusticeProcedure = "justice_procedure": ("Justitiële procedure en strafuitvoering", "Procédure judiciaire et exécution de la peine", "Justice procedure and sentence execution"),
        /// Probation conditions and prohibitions.
        ProbationConditions = "probation_conditions": ("Voorwaarden en verbodsbepalingen", "Conditions et interdictions", "Probation conditions and prohibitions"),
        /// Rehabilitation (herstel in eer en rechten).
        Rehabilitation = "rehabilitation": ("Herstel in eer en rechten", "Réhabilitation", "Rehabilitation"),
        /// Finances and debts.
        FinancesDebts = "finances_debts": ("Financiën en schulden", "Finances et dettes", "Finances and debts"),
        /// Residence status.
        ResidenceStatus = "residence_status": ("Verblijfsstatuut", "Droit de séjour", "Residence status"),
        /// Administration and documents.
        Administration = "administration": ("Administratie en documenten", "Administration et documents", "Administration and documents"),
        /// Work and training.
        WorkTraining = "work_training": ("Werk en opleiding", "Travail et formation", "Work and training"),
        /// Housing.
        Housing = "housing": ("Huisvesting", "Logement", "Housing"),
        /// Health, mental health and addiction.
        Health = "health": ("Gezondheid, geestelijke gezondheid en verslaving", "Santé, santé mentale et assuétudes", "Health, mental health and addiction"),
        /// Family and relations.
        FamilyRelations = "family_relations": ("Familie en relaties", "Famille et relations", "Family and relations"),
        /// Social security and income.
        SocialSecurity = "social_security": ("Sociale zekerheid en inkomen", "Sécurité sociale et revenus", "Social security and income"),
    }
}

code_list! {
    /// The legal status of a client in the justice procedure.
    LegalStatus {
        /// Suspect (verdachte, prévenu).
        Suspect = "suspect": ("Verdachte", "Prévenu", "Suspect"),
        /// Convict (veroordeelde, condamné).
        Convict = "convict": ("Veroordeelde", "Condamné", "Convict"),
        /// Internee (geïnterneerde, interné).
        Internee = "internee": ("Geïnterneerde", "Interné", "Internee"),
    }
}

code_list! {
    /// The Brussels prisons. Haren is the Brussels prison since 2022; Saint-Gilles, Forest and
    /// Berkendael are the older sites, kept for history and for the years they overlapped.
    Prison {
        /// Haren (the Brussels prison).
        Haren = "haren": ("Gevangenis van Haren", "Prison de Haren", "Haren prison"),
        /// Saint-Gilles (Sint-Gillis).
        SaintGilles = "saint_gilles": ("Gevangenis van Sint-Gillis", "Prison de Saint-Gilles", "Saint-Gilles prison"),
        /// Forest (Vorst).
        Forest = "forest": ("Gevangenis van Vorst", "Prison de Forest", "Forest prison"),
        /// Berkendael (women's prison).
        Berkendael = "berkendael": ("Gevangenis van Berkendael", "Prison de Berkendael", "Berkendael prison"),
        /// A prison outside Brussels, or another institution.
        Other = "other": ("Andere inrichting", "Autre établissement", "Other institution"),
    }
}

code_list! {
    /// How a detainee leaves (or will leave) prison.
    ReleaseKind {
        /// End of the sentence.
        EndOfSentence = "end_of_sentence": ("Strafeinde", "Fin de peine", "End of sentence"),
        /// Conditional release.
        ConditionalRelease = "conditional_release": ("Voorwaardelijke invrijheidstelling", "Libération conditionnelle", "Conditional release"),
        /// Electronic monitoring.
        ElectronicMonitoring = "electronic_monitoring": ("Elektronisch toezicht", "Surveillance électronique", "Electronic monitoring"),
        /// Limited detention.
        LimitedDetention = "limited_detention": ("Beperkte detentie", "Détention limitée", "Limited detention"),
        /// Provisional release.
        ProvisionalRelease = "provisional_release": ("Voorlopige invrijheidstelling", "Libération provisoire", "Provisional release"),
        /// Release on trial of an internee.
        InternmentReleaseOnTrial = "internment_release_on_trial": ("Invrijheidstelling op proef (internering)", "Libération à l'essai (internement)", "Release on trial (internment)"),
        /// Definitive release of an internee.
        DefinitiveInternmentRelease = "definitive_internment_release": ("Definitieve invrijheidstelling (internering)", "Libération définitive (internement)", "Definitive release (internment)"),
        /// Acquittal.
        Acquittal = "acquittal": ("Vrijspraak", "Acquittement", "Acquittal"),
        /// Release by the investigating judge or the council chamber (pre-trial detention ends).
        ReleaseByInvestigatingCourt = "release_by_investigating_court": ("Vrijlating door onderzoeksrechter of raadkamer", "Mise en liberté par le juge d'instruction ou la chambre du conseil", "Release by the investigating judge or council chamber"),
        /// Another kind of release.
        Other = "other": ("Andere", "Autre", "Other"),
    }
}

code_list! {
    /// A kind of outside service (not one of the justice-welfare services) a client is referred to.
    OutsideService {
        /// Addiction care.
        AddictionCare = "addiction_care": ("Verslavingszorg", "Aide en assuétudes", "Addiction care"),
        /// Debt mediation.
        DebtMediation = "debt_mediation": ("Schuldbemiddeling", "Médiation de dettes", "Debt mediation"),
        /// Employment and training services.
        Employment = "employment": ("Tewerkstelling", "Emploi", "Employment"),
        /// A psychologist.
        Psychologist = "psychologist": ("Psycholoog", "Psychologue", "Psychologist"),
        /// Housing services.
        Housing = "housing": ("Huisvesting", "Logement", "Housing"),
        /// Legal aid.
        LegalAid = "legal_aid": ("Juridische bijstand", "Aide juridique", "Legal aid"),
        /// The public social welfare centre (OCMW, CPAS).
        OcmwCpas = "ocmw_cpas": ("OCMW", "CPAS", "Public social welfare centre (OCMW/CPAS)"),
        /// Another service.
        Other = "other": ("Andere dienst", "Autre service", "Other service"),
    }
}

code_list! {
    /// The target groups of needs surveys and group activities.
    TargetGroup {
        /// Men.
        Men = "men": ("Mannen", "Hommes", "Men"),
        /// Women.
        Women = "women": ("Vrouwen", "Femmes", "Women"),
        /// Suspects.
        Suspects = "suspects": ("Verdachten", "Prévenus", "Suspects"),
        /// Convicts.
        Convicts = "convicts": ("Veroordeelden", "Condamnés", "Convicts"),
        /// Internees.
        Internees = "internees": ("Geïnterneerden", "Internés", "Internees"),
    }
}

code_list! {
    /// The kinds of group activity in prison.
    ActivityKind {
        /// Formative, for example welcome classes for detainees who speak neither Dutch nor French.
        Formative = "formative": ("Vormend", "Formatif", "Formative"),
        /// Psychosocial, for example sessions on restorative mediation and victimhood.
        Psychosocial = "psychosocial": ("Psychosociaal", "Psychosocial", "Psychosocial"),
        /// Sociocultural, for example drawing, painting, theatre.
        Sociocultural = "sociocultural": ("Socio-cultureel", "Socioculturel", "Sociocultural"),
    }
}

code_list! {
    /// A relative's relation to the client. Only the relation is recorded, never who.
    Relation {
        /// Partner.
        Partner = "partner": ("Partner", "Partenaire", "Partner"),
        /// Child.
        Child = "child": ("Kind", "Enfant", "Child"),
        /// Parent.
        Parent = "parent": ("Ouder", "Parent", "Parent"),
        /// Brother or sister.
        Sibling = "sibling": ("Broer of zus", "Frère ou sœur", "Sibling"),
        /// Another relative or close person.
        Other = "other": ("Andere naaste", "Autre proche", "Other relative"),
    }
}

/// A language, as an ISO 639-1 (two letters) or ISO 639-3 (three letters) code in lower case,
/// for example `nl`, `fr`, `ar`, `ber`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Language(String);

impl Language {
    /// Checks and wraps a language code.
    pub fn parse(code: &str) -> Result<Self, String> {
        let ok = (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase());
        if ok {
            Ok(Self(code.to_owned()))
        } else {
            Err(format!("{code:?} is not an ISO 639 language code (2 or 3 lower-case letters)"))
        }
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.0
    }

    /// Labels of the languages the services name most; `None` for the others.
    pub fn labels(&self) -> Option<Labels> {
        COMMON_LANGUAGES.iter().find(|(c, _)| *c == self.0).map(|(_, l)| *l)
    }
}

impl TryFrom<String> for Language {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Language> for String {
    fn from(l: Language) -> String {
        l.0
    }
}

impl JsonSchema for Language {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Language".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z]{2,3}$",
            "description": "ISO 639-1 or ISO 639-3 language code"
        })
    }
}

/// Languages the services list, with labels (ISO 639 code, labels).
pub const COMMON_LANGUAGES: &[(&str, Labels)] = &[
    ("nl", Labels::new("Nederlands", "néerlandais", "Dutch")),
    ("fr", Labels::new("Frans", "français", "French")),
    ("en", Labels::new("Engels", "anglais", "English")),
    ("de", Labels::new("Duits", "allemand", "German")),
    ("ar", Labels::new("Arabisch", "arabe", "Arabic")),
    ("ber", Labels::new("Berbers", "berbère", "Berber")),
    ("es", Labels::new("Spaans", "espagnol", "Spanish")),
    ("it", Labels::new("Italiaans", "italien", "Italian")),
    ("pt", Labels::new("Portugees", "portugais", "Portuguese")),
    ("ro", Labels::new("Roemeens", "roumain", "Romanian")),
    ("pl", Labels::new("Pools", "polonais", "Polish")),
    ("tr", Labels::new("Turks", "turc", "Turkish")),
    ("ru", Labels::new("Russisch", "russe", "Russian")),
    ("sq", Labels::new("Albanees", "albanais", "Albanian")),
];

code_list! {
    /// The authority that recognises and funds an organisation.
    Authority {
        /// Common Community Commission (COCOM, GGC).
        Cocom = "cocom": ("Gemeenschappelijke Gemeenschapscommissie (GGC)", "Commission communautaire commune (COCOM)", "Common Community Commission (COCOM/GGC)"),
        /// Flemish Community.
        FlemishCommunity = "flemish_community": ("Vlaamse Gemeenschap", "Communauté flamande", "Flemish Community"),
        /// French Community (Fédération Wallonie-Bruxelles).
        FrenchCommunity = "french_community": ("Franse Gemeenschap", "Fédération Wallonie-Bruxelles", "French Community"),
    }
}

/// One organisation of the registry. The registry is data (configuration), not an enum: one
/// source text speaks of eight services while listing seven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    /// The id used in sources, subjects and URLs.
    pub id: crate::ids::OrgId,
    /// The name, as the organisation writes it.
    pub name: String,
    /// The recognising authority; `None` for the community coordinators.
    pub authority: Option<Authority>,
    /// True for a justice-welfare service that keeps cases; false for the coordinators.
    pub keeps_cases: bool,
}

/// The default registry: the seven Brussels justice-welfare services and the community
/// coordinators.
pub fn default_organisations() -> Vec<Organisation> {
    let org = |id: &str, name: &str, authority: Option<Authority>, keeps_cases: bool| Organisation {
        id: crate::ids::OrgId::parse(id).unwrap_or_else(|_| unreachable!("static ids are valid")),
        name: name.to_owned(),
        authority,
        keeps_cases,
    };
    vec![
        org("apo", "APO", Some(Authority::Cocom), true),
        org("dsr", "Dienst voor Sociale Reïntegratie", Some(Authority::Cocom), true),
        org("sireas", "Sociale Actie van Brussel (Siréas)", Some(Authority::Cocom), true),
        org("smbg", "Stichting voor Morele Bijstand aan Gevangenen", Some(Authority::Cocom), true),
        org("wsw", "Werk voor Sociale Wederaanpassing", Some(Authority::Cocom), true),
        org("caw-brussel", "Justitieel Welzijnswerk (CAW Brussel)", Some(Authority::FlemishCommunity), true),
        org("slaj-v", "Service Laïque d'Aide aux Justiciables et aux Victimes", Some(Authority::FrenchCommunity), true),
        org("coordination", "Gemeenschapscoördinatoren / coordinateurs communautaires", None, false),
    ]
}

/// The entries of one code list as JSON: `[{ "code": ..., "labels": { "nl", "fr", "en" } }, ...]`.
pub fn code_list_json<T: CodeList>() -> serde_json::Value {
    T::ALL.iter().map(|v| serde_json::json!({ "code": v.code(), "labels": v.labels() })).collect::<Vec<_>>().into()
}

/// Every code list and the organisations registry, for the catalogue endpoint:
/// `{ "<list name>": [{ "code": ..., "labels": { "nl", "fr", "en" } }, ...], ...,
/// "languages": [...], "organisations": [...] }`. `organisations` is the default registry;
/// a deployment that configures its own registry replaces that entry.
pub fn reference_data() -> serde_json::Value {
    use crate::events::{
        ClosureReason, ConsentScopeKind, ContactForm, DropoutReason, ErasureReason, EvaluationOutcome,
        GuidanceDeclineReason, GuidanceSetting, Interpreter, LeavePurpose, OutingPurpose, ReferralCancelReason,
        ReferralDeclineReason, ReferralOutcome, RequestChannel, ScreeningRefusalReason, SignalAddressee, UrgentOutcome,
    };
    let languages: Vec<serde_json::Value> =
        COMMON_LANGUAGES.iter().map(|(code, labels)| serde_json::json!({ "code": code, "labels": labels })).collect();
    serde_json::json!({
        "intervention_modes": code_list_json::<InterventionMode>(),
        "life_domains": code_list_json::<LifeDomain>(),
        "legal_statuses": code_list_json::<LegalStatus>(),
        "authorities": code_list_json::<Authority>(),
        "prisons": code_list_json::<Prison>(),
        "release_kinds": code_list_json::<ReleaseKind>(),
        "outside_services": code_list_json::<OutsideService>(),
        "target_groups": code_list_json::<TargetGroup>(),
        "activity_kinds": code_list_json::<ActivityKind>(),
        "relations": code_list_json::<Relation>(),
        "request_channels": code_list_json::<RequestChannel>(),
        "interpreters": code_list_json::<Interpreter>(),
        "guidance_settings": code_list_json::<GuidanceSetting>(),
        "guidance_decline_reasons": code_list_json::<GuidanceDeclineReason>(),
        "urgent_outcomes": code_list_json::<UrgentOutcome>(),
        "closure_reasons": code_list_json::<ClosureReason>(),
        "leave_purposes": code_list_json::<LeavePurpose>(),
        "outing_purposes": code_list_json::<OutingPurpose>(),
        "contact_forms": code_list_json::<ContactForm>(),
        "referral_decline_reasons": code_list_json::<ReferralDeclineReason>(),
        "referral_outcomes": code_list_json::<ReferralOutcome>(),
        "referral_cancel_reasons": code_list_json::<ReferralCancelReason>(),
        "consent_scopes": code_list_json::<ConsentScopeKind>(),
        "screening_refusal_reasons": code_list_json::<ScreeningRefusalReason>(),
        "dropout_reasons": code_list_json::<DropoutReason>(),
        "evaluation_outcomes": code_list_json::<EvaluationOutcome>(),
        "signal_addressees": code_list_json::<SignalAddressee>(),
        "erasure_reasons": code_list_json::<ErasureReason>(),
        "languages": languages,
        "organisations": default_organisations(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_list_entry_has_three_non_empty_labels_and_a_unique_code() {
        let data = reference_data();
        let lists = data.as_object().expect("an object");
        for (name, entries) in lists {
            if name == "organisations" {
                continue;
            }
            let entries = entries.as_array().expect("a list");
            assert!(!entries.is_empty(), "{name} is empty");
            let mut codes = std::collections::BTreeSet::new();
            for e in entries {
                let code = e["code"].as_str().expect("a code");
                assert!(codes.insert(code.to_owned()), "{name}: {code} twice");
                for lang in ["nl", "fr", "en"] {
                    let label = e["labels"][lang].as_str().unwrap_or_default();
                    assert!(!label.is_empty(), "{name}/{code} has no {lang} label");
                }
            }
        }
    }

    #[test]
    fn codes_are_the_serde_names() {
        for p in Prison::ALL {
            assert_eq!(serde_json::to_value(p).expect("serializes"), serde_json::json!(p.code()));
        }
        for k in ReleaseKind::ALL {
            assert_eq!(serde_json::to_value(k).expect("serializes"), serde_json::json!(k.code()));
        }
    }

    #[test]
    fn reference_data_lists_the_seven_services_and_the_coordinators() {
        let data = reference_data();
        let orgs = data["organisations"].as_array().expect("a list");
        assert_eq!(orgs.len(), 8);
        assert_eq!(orgs.iter().filter(|o| o["keeps_cases"] == true).count(), 7);
        assert_eq!(data["prisons"][0]["code"], "haren");
    }
}
