//! A realistic synthetic history: the seven services' clients over a year, in and out of
//! prison, with interventions, family contact, furloughs, releases, after-care, consents,
//! closed-loop referrals between the services and to outside services, group activities run
//! with the community coordinators, and bottleneck signals. Deterministic for a seed.
//!
//! Used by `relais demo` (through the HTTP API, as an NGO would publish) and by the
//! benchmark. Every event passes the domain's validation (a test checks it).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Number of clients (about 25 events each).
    pub clients: usize,
    /// The first day of the history.
    pub start: NaiveDate,
    /// Length of the history in days.
    pub days: i64,
    /// Seed: the same seed gives the same history, ids included.
    pub seed: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self { clients: 1200, start: NaiveDate::from_ymd_opt(2025, 11, 1).unwrap_or_default(), days: 365, seed: 2026 }
    }
}

/// One generated CloudEvent, with the organisation that publishes it.
#[derive(Debug, Clone)]
pub struct SynthEvent {
    /// The publishing organisation.
    pub org: &'static str,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// The CloudEvent (JSON).
    pub event: Value,
}

/// The services that keep cases, with their weight in the caseload.
const SERVICES: &[(&str, u32)] =
    &[("apo", 10), ("dsr", 12), ("sireas", 14), ("smbg", 10), ("wsw", 14), ("caw-brussel", 24), ("slaj-v", 16)];
const LANGUAGES: &[(&str, u32)] =
    &[("nl", 20), ("fr", 40), ("ar", 14), ("en", 6), ("ber", 5), ("ro", 4), ("es", 3), ("pt", 2), ("tr", 3), ("pl", 3)];
const DOMAINS: &[&str] = &[
    "justice_procedure",
    "probation_conditions",
    "rehabilitation",
    "finances_debts",
    "residence_status",
    "administration",
    "work_training",
    "housing",
    "health",
    "family_relations",
    "social_security",
];
const MODES: &[(&str, u32)] = &[
    ("listening_support", 30),
    ("informing", 20),
    ("intensive_guidance", 8),
    ("contact_assistance", 14),
    ("relational_network", 8),
    ("planning", 8),
    ("practical_help", 8),
    ("access_to_help", 4),
];
const PRISONS: &[(&str, u32)] = &[("haren", 70), ("saint_gilles", 15), ("forest", 5), ("berkendael", 10)];
const OUTSIDE: &[&str] =
    &["addiction_care", "debt_mediation", "employment", "psychologist", "housing", "legal_aid", "ocmw_cpas"];

struct Gen {
    rng: StdRng,
    out: Vec<SynthEvent>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

fn weighted<'a>(rng: &mut StdRng, items: &'a [(&'a str, u32)]) -> &'a str {
    items.choose_weighted(rng, |(_, w)| *w).map(|(s, _)| *s).unwrap_or(items[0].0)
}

impl Gen {
    fn id(&mut self) -> Uuid {
        Uuid::from_u128(self.rng.random::<u128>() & !(0xF000 << 64) | (0x4000 << 64))
    }

    fn push(&mut self, org: &'static str, subject: String, time: DateTime<Utc>, event_type: &str, data: Value) {
        if time > self.end {
            return;
        }
        let id = self.id();
        self.out.push(SynthEvent {
            org,
            time,
            event: json!({
                "specversion": "1.0",
                "id": id.to_string(),
                "source": format!("/orgs/{org}"),
                "type": event_type,
                "subject": subject,
                "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "datacontenttype": "application/json",
                "data": data,
            }),
        });
    }

    fn domains(&mut self, n: usize) -> Vec<&'static str> {
        let mut d: Vec<&str> = DOMAINS.choose_multiple(&mut self.rng, n).copied().collect();
        d.sort_unstable();
        d
    }

    /// Working hours of a day some days after `t`.
    fn later(&mut self, t: DateTime<Utc>, min_days: i64, max_days: i64) -> DateTime<Utc> {
        let days = self.rng.random_range(min_days..=max_days);
        let minutes = self.rng.random_range(0..8 * 60);
        let day = (t + Duration::days(days)).date_naive();
        let candidate = day.and_hms_opt(8, 0, 0).unwrap_or_default().and_utc() + Duration::minutes(minutes);
        // Events of one subject stay in order.
        candidate.max(t + Duration::minutes(1))
    }

    fn client(&mut self, n: usize) {
        let org = weighted(&mut self.rng, SERVICES);
        let org: &'static str = SERVICES.iter().find(|(o, _)| *o == org).map(|(o, _)| *o).unwrap_or("apo");
        let case = self.id();
        let subject = format!("cases/{case}");
        let client_ref = format!("{}-{:05}", org.replace('-', ""), n);
        let language = weighted(&mut self.rng, LANGUAGES);
        let in_detention = self.rng.random_bool(0.72);
        let legal = weighted(&mut self.rng, &[("suspect", 35), ("convict", 55), ("internee", 10)]);
        let span = (self.end - self.start).num_days().max(30);
        let mut t = self.later(self.start, 0, span - 20);
        let channel = weighted(
            &mut self.rng,
            &[("by_person", 55), ("by_relative", 15), ("offered_and_accepted", 25), ("by_referral", 5)],
        );
        self.push(
            org,
            subject.clone(),
            t,
            "relais.guidance.requested",
            json!({ "client_ref": client_ref, "channel": channel, "language": language }),
        );
        t = self.later(t, 0, 7);
        if self.rng.random_bool(0.06) {
            let reason =
                weighted(&mut self.rng, &[("no_capacity", 3), ("better_served_elsewhere", 4), ("client_withdrew", 3)]);
            self.push(
                org,
                subject,
                t,
                "relais.guidance.declined",
                json!({ "client_ref": client_ref, "reason": reason }),
            );
            return;
        }
        let setting = if in_detention { "in_detention" } else { "at_liberty" };
        self.push(
            org,
            subject.clone(),
            t,
            "relais.guidance.accepted",
            json!({ "client_ref": client_ref, "setting": setting, "legal_status": legal }),
        );
        self.push(
            org,
            subject.clone(),
            t + Duration::minutes(1),
            "relais.consent.given",
            json!({ "client_ref": client_ref, "scope": "guidance" }),
        );
        let prison = weighted(&mut self.rng, PRISONS);
        if in_detention {
            let started = (t - Duration::days(self.rng.random_range(3..400))).date_naive();
            self.push(
                org,
                subject.clone(),
                t + Duration::minutes(2),
                "relais.detention.started",
                json!({ "client_ref": client_ref, "legal_status": legal, "prison": prison, "started_on": started }),
            );
        }
        t = self.later(t, 1, 14);
        let interpreter =
            if ["nl", "fr"].contains(&language) || self.rng.random_bool(0.5) { "none" } else { "telephone" };
        let n_domains = self.rng.random_range(1..4);
        let intake_domains = self.domains(n_domains);
        self.push(org, subject.clone(), t, "relais.intake.held",
            json!({ "client_ref": client_ref, "life_domains": intake_domains, "language": language, "interpreter": interpreter }));
        t = self.later(t, 1, 10);
        self.push(
            org,
            subject.clone(),
            t,
            "relais.plan.set",
            json!({ "client_ref": client_ref, "life_domains": intake_domains }),
        );
        if self.rng.random_bool(0.3) {
            self.push(
                org,
                subject.clone(),
                t + Duration::minutes(5),
                "relais.consent.given",
                json!({
                    "client_ref": client_ref, "scope": "continuity_monitor",
                    "linkage_key": hex::encode(Sha256::digest(format!("person-{n}"))),
                }),
            );
        }
        let interventions = self.rng.random_range(3..22);
        let mut released = false;
        let mut referral_done = false;
        for i in 0..interventions {
            t = self.later(t, 2, 18);
            let mode = weighted(&mut self.rng, MODES);
            let n_domains = self.rng.random_range(1..3);
            let domains = self.domains(n_domains);
            let minutes: u16 = self.rng.random_range(10..90);
            self.push(
                org,
                subject.clone(),
                t,
                "relais.intervention.recorded",
                json!({
                    "client_ref": client_ref, "mode": mode, "life_domains": domains,
                    "duration_minutes": minutes, "language": language, "interpreter": interpreter,
                }),
            );
            if self.rng.random_bool(0.12) {
                let relation = weighted(&mut self.rng, &[("partner", 4), ("child", 3), ("parent", 3), ("sibling", 1)]);
                let form = if in_detention && !released {
                    weighted(&mut self.rng, &[("visit", 4), ("phone", 3), ("video", 2), ("letter", 1)])
                } else {
                    "meeting_during_leave"
                };
                let form = if form == "meeting_during_leave" && (released || !in_detention) { "phone" } else { form };
                self.push(
                    org,
                    subject.clone(),
                    t + Duration::minutes(30),
                    "relais.family_contact.facilitated",
                    json!({ "client_ref": client_ref, "relation": relation, "form": form }),
                );
            }
            if in_detention && !released && self.rng.random_bool(0.06) {
                let purpose =
                    weighted(&mut self.rng, &[("family_return", 5), ("job", 2), ("housing", 2), ("medical", 1)]);
                let leave_on = (t + Duration::days(self.rng.random_range(3..30))).date_naive();
                self.push(
                    org,
                    subject.clone(),
                    t + Duration::minutes(40),
                    "relais.leave.prepared",
                    json!({ "client_ref": client_ref, "purpose": purpose, "leave_on": leave_on }),
                );
            }
            if in_detention && !released && self.rng.random_bool(0.04) {
                let purpose = weighted(&mut self.rng, &[("court_hearing", 3), ("medical_appointment", 2)]);
                self.push(
                    org,
                    subject.clone(),
                    t + Duration::minutes(50),
                    "relais.outing.escorted",
                    json!({ "client_ref": client_ref, "purpose": purpose, "outing_on": t.date_naive() }),
                );
            }
            if !referral_done && i >= 1 && self.rng.random_bool(0.18) {
                referral_done = true;
                t = self.referral(org, case, &client_ref, t);
            }
            if in_detention && !released && i + 3 == interventions && self.rng.random_bool(0.5) {
                let kind = weighted(
                    &mut self.rng,
                    &[
                        ("end_of_sentence", 4),
                        ("conditional_release", 4),
                        ("electronic_monitoring", 3),
                        ("provisional_release", 2),
                    ],
                );
                let release_at = self.later(t, 10, 40);
                self.push(
                    org,
                    subject.clone(),
                    t + Duration::minutes(20),
                    "relais.release.scheduled",
                    json!({ "client_ref": client_ref, "kind": kind, "release_on": release_at.date_naive() }),
                );
                t = release_at;
                self.push(
                    org,
                    subject.clone(),
                    t,
                    "relais.detainee.released",
                    json!({ "client_ref": client_ref, "kind": kind, "released_on": t.date_naive() }),
                );
                released = true;
                if self.rng.random_bool(0.7) {
                    t = self.later(t, 1, 10);
                    let d = self.domains(2);
                    self.push(
                        org,
                        subject.clone(),
                        t,
                        "relais.aftercare.started",
                        json!({ "client_ref": client_ref, "life_domains": d }),
                    );
                }
            }
        }
        if self.rng.random_bool(0.55) {
            t = self.later(t, 5, 30);
            let reason = if released {
                "released_and_handed_over"
            } else {
                weighted(&mut self.rng, &[("goals_reached", 5), ("client_ended", 3), ("no_contact", 2)])
            };
            self.push(org, subject, t, "relais.guidance.closed", json!({ "client_ref": client_ref, "reason": reason }));
        }
    }

    fn referral(&mut self, org: &'static str, case: Uuid, client_ref: &str, t: DateTime<Utc>) -> DateTime<Utc> {
        let rid = self.id();
        let subject = format!("referrals/{rid}");
        let domains = self.domains(1);
        if self.rng.random_bool(0.5) {
            let to = loop {
                let o = weighted(&mut self.rng, SERVICES);
                if o != org {
                    break SERVICES.iter().find(|(s, _)| *s == o).map(|(s, _)| *s).unwrap_or("caw-brussel");
                }
            };
            let expires = (t + Duration::days(180)).date_naive();
            self.push(
                org,
                format!("cases/{case}"),
                t + Duration::minutes(10),
                "relais.consent.given",
                json!({ "client_ref": client_ref, "scope": { "share_with_organisation": to }, "expires_on": expires }),
            );
            self.push(org, subject.clone(), t + Duration::minutes(15), "relais.referral.made", json!({
                "client_ref": client_ref, "destination": { "organisation": to }, "life_domains": domains, "case_id": case.to_string(),
            }));
            let their_ref = format!("{}-r{}", to.replace('-', ""), &rid.simple().to_string()[..8]);
            let mut u = self.later(t, 1, 3);
            self.push(to, subject.clone(), u, "relais.referral.received", json!({ "client_ref": their_ref }));
            let answer = self.rng.random_range(0..10);
            u = self.later(u, 1, if answer < 2 { 25 } else { 9 });
            if answer == 0 {
                self.push(
                    to,
                    subject,
                    u,
                    "relais.referral.declined",
                    json!({ "client_ref": their_ref, "reason": "no_capacity" }),
                );
                return t;
            }
            if answer == 1 {
                // Left unanswered: the continuity monitor shows it.
                return t;
            }
            self.push(to, subject.clone(), u, "relais.referral.accepted", json!({ "client_ref": their_ref }));
            u = self.later(u, 1, 25);
            self.push(to, subject.clone(), u, "relais.referral.first_contact_made", json!({ "client_ref": their_ref }));
            if self.rng.random_bool(0.7) {
                u = self.later(u, 10, 60);
                let outcome =
                    weighted(&mut self.rng, &[("help_provided", 6), ("in_guidance", 3), ("client_did_not_attend", 1)]);
                self.push(
                    to,
                    subject,
                    u,
                    "relais.referral.completed",
                    json!({ "client_ref": their_ref, "outcome": outcome }),
                );
            }
        } else {
            let service = *OUTSIDE.choose(&mut self.rng).unwrap_or(&"housing");
            self.push(org, subject.clone(), t + Duration::minutes(15), "relais.referral.made", json!({
                "client_ref": client_ref, "destination": { "outside_service": service }, "life_domains": domains, "case_id": case.to_string(),
            }));
            if self.rng.random_bool(0.8) {
                let u = self.later(t, 7, 45);
                let outcome =
                    weighted(&mut self.rng, &[("help_provided", 6), ("client_did_not_attend", 2), ("not_eligible", 1)]);
                self.push(
                    org,
                    subject,
                    u,
                    "relais.referral.completed",
                    json!({ "client_ref": client_ref, "outcome": outcome }),
                );
            }
        }
        t
    }

    fn activity(&mut self, n: usize) {
        let coord: &'static str = "coordination";
        let aid = self.id();
        let subject = format!("activities/{aid}");
        let kind = weighted(&mut self.rng, &[("formative", 4), ("psychosocial", 3), ("sociocultural", 3)]);
        let prison = weighted(&mut self.rng, PRISONS);
        let group =
            weighted(&mut self.rng, &[("men", 5), ("women", 2), ("suspects", 2), ("convicts", 3), ("internees", 1)]);
        let span = (self.end - self.start).num_days().max(60);
        let mut t = self.later(self.start, 0, span - 50);
        let respondents: u16 = self.rng.random_range(8..60);
        self.push(coord, subject.clone(), t, "relais.needs_survey.recorded", json!({
            "target_group": group, "prison": prison, "respondents": respondents, "wanted": [kind], "languages": ["nl", "fr"],
        }));
        t = self.later(t, 3, 10);
        let capacity: u16 = self.rng.random_range(8..16);
        let title = match kind {
            "formative" => "Onthaalklas / classe d'accueil",
            "psychosocial" => "Herstelgericht werken / médiation réparatrice",
            _ => "Tekenen en schilderen / dessin et peinture",
        };
        let partners: Vec<&str> = SERVICES.choose_multiple(&mut self.rng, 2).map(|(o, _)| *o).collect();
        let starts = self.later(t, 14, 30);
        self.push(
            coord,
            subject.clone(),
            t,
            "relais.activity.planned",
            json!({
                "kind": kind, "title": title, "target_groups": [group], "prison": prison, "partners": partners,
                "languages": ["nl", "fr"], "capacity": capacity, "starts_on": starts.date_naive(),
            }),
        );
        let applicants = self.rng.random_range(capacity as usize..capacity as usize + 6);
        let mut enrolled = Vec::new();
        for p in 0..applicants {
            let who = format!("coord-{n:03}-{p:02}");
            let u = self.later(t, 1, 10);
            self.push(coord, subject.clone(), u, "relais.registration.received", json!({ "client_ref": who }));
            let admitted = enrolled.len() < capacity as usize && self.rng.random_bool(0.85);
            let screen = u + Duration::days(2);
            if admitted {
                self.push(
                    coord,
                    subject.clone(),
                    screen,
                    "relais.participant.screened",
                    json!({ "client_ref": who, "admitted": true }),
                );
                self.push(
                    coord,
                    subject.clone(),
                    screen + Duration::hours(1),
                    "relais.participant.enrolled",
                    json!({ "client_ref": who }),
                );
                enrolled.push(who);
            } else {
                self.push(
                    coord,
                    subject.clone(),
                    screen,
                    "relais.participant.screened",
                    json!({ "client_ref": who, "admitted": false, "refusal_reason": "schedule_conflict" }),
                );
            }
        }
        let mut present = enrolled.len() as u16;
        let mut s = starts + Duration::days(1);
        enrolled.shuffle(&mut self.rng);
        for session in 1..=self.rng.random_range(6..12u16) {
            let absent = self.rng.random_range(0..3).min(present);
            self.push(coord, subject.clone(), s, "relais.session.held", json!({
                "session_number": session, "held_on": s.date_naive(), "attended_count": present - absent, "absent_count": absent,
            }));
            if session > 2
                && self.rng.random_bool(0.15)
                && let Some(who) = enrolled.pop()
            {
                present = present.saturating_sub(1);
                let reason = weighted(
                    &mut self.rng,
                    &[("released", 3), ("transferred", 2), ("lost_interest", 3), ("schedule_conflict", 2)],
                );
                self.push(
                    coord,
                    subject.clone(),
                    s + Duration::hours(2),
                    "relais.participant.dropped_out",
                    json!({ "client_ref": who, "reason": reason }),
                );
                if self.rng.random_bool(0.8) {
                    let f = self.later(s, 2, 20);
                    self.push(coord, subject.clone(), f, "relais.dropout_feedback.held", json!({ "client_ref": who }));
                }
            }
            s += Duration::days(7);
        }
        let rating = self.rng.random_range(3..=5u8);
        self.push(
            coord,
            subject,
            s,
            "relais.activity.evaluated",
            json!({ "rating": rating, "outcome": "continue_adjusted" }),
        );
    }

    fn bottleneck(&mut self) {
        let org = weighted(&mut self.rng, SERVICES);
        let org: &'static str = SERVICES.iter().find(|(o, _)| *o == org).map(|(o, _)| *o).unwrap_or("apo");
        let span = (self.end - self.start).num_days().max(2);
        let t = self.later(self.start, 0, span - 1);
        let (domain, text) = *[
            (
                "housing",
                "Te weinig doorgangswoningen voor wie vrijkomt zonder adres / trop peu de logements de transit",
            ),
            ("residence_status", "Geen OCMW-steun zonder geldig verblijfsdocument bij vrijlating"),
            ("health", "Wachtlijsten voor forensische zorg na internering / listes d'attente en soins médico-légaux"),
            ("finances_debts", "Schuldbemiddeling niet bereikbaar tijdens detentie"),
        ]
        .choose(&mut self.rng)
        .unwrap_or(&("housing", "Te weinig doorgangswoningen"));
        let id = self.id();
        self.push(
            org,
            format!("signals/{id}"),
            t,
            "relais.bottleneck.signalled",
            json!({ "life_domain": domain, "addressed_to": ["services", "authority"], "description": text }),
        );
    }
}

/// Generates the history, sorted by time (events of one subject keep their order).
pub fn generate(options: &SynthOptions) -> Vec<SynthEvent> {
    let start = options.start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    let mut g = Gen {
        rng: StdRng::seed_from_u64(options.seed),
        out: Vec::with_capacity(options.clients * 26),
        start,
        end: start + Duration::days(options.days),
    };
    for n in 0..options.clients {
        g.client(n);
    }
    for n in 0..(options.clients / 40).max(1) {
        g.activity(n);
    }
    for _ in 0..(options.clients / 50).max(1) {
        g.bottleneck();
    }
    let mut out = g.out;
    out.sort_by_key(|e| e.time);
    out
}

/// Groups a time-ordered history into publishing rounds: one round per day, and within a round
/// one batch per organisation (split at `max_batch`). Rounds are published one after another
/// and a round's batches concurrently, so an answer to a referral never overtakes it.
pub fn daily_batches(events: &[SynthEvent], max_batch: usize) -> Vec<Vec<(&'static str, Vec<Value>)>> {
    let mut rounds: Vec<Vec<(&'static str, Vec<Value>)>> = Vec::new();
    let mut current_day = None;
    for e in events {
        let day = e.time.date_naive();
        if current_day != Some(day) {
            rounds.push(Vec::new());
            current_day = Some(day);
        }
        let Some(round) = rounds.last_mut() else { continue };
        match round.iter_mut().rev().find(|(org, batch)| *org == e.org && batch.len() < max_batch) {
            Some((_, batch)) => batch.push(e.event.clone()),
            None => round.push((e.org, vec![e.event.clone()])),
        }
    }
    rounds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_event_is_valid_and_the_history_is_large_enough() {
        let events = generate(&SynthOptions { clients: 300, ..Default::default() });
        assert!(events.len() > 300 * 15, "{} events", events.len());
        for e in &events {
            let (envelope, _) = relais_domain::Envelope::from_cloud_event(e.event.clone(), Utc::now(), "synth")
                .unwrap_or_else(|err| panic!("{err}: {}", e.event));
            assert_eq!(envelope.org.as_str(), e.org);
        }
        let orgs: std::collections::BTreeSet<&str> = events.iter().map(|e| e.org).collect();
        assert_eq!(orgs.len(), 8, "the seven services and the coordinators: {orgs:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let a = generate(&SynthOptions { clients: 20, ..Default::default() });
        let b = generate(&SynthOptions { clients: 20, ..Default::default() });
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.event == y.event));
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use relais_domain::aggregates::{activity, case, referral};
    use relais_domain::{AggregateKind, Envelope};
    use std::collections::HashMap;

    /// Every generated event keeps the aggregates' rules, so the demo loads without quarantine.
    #[test]
    fn the_generated_history_keeps_every_rule() {
        let events = generate(&SynthOptions { clients: 400, ..Default::default() });
        let mut cases: HashMap<(String, String), case::State> = HashMap::new();
        let mut referrals: HashMap<String, referral::State> = HashMap::new();
        let mut activities: HashMap<String, activity::State> = HashMap::new();
        let mut violations = Vec::new();
        for e in &events {
            let (env, _): (Envelope, _) =
                Envelope::from_cloud_event(e.event.clone(), Utc::now(), "synth").expect("valid event");
            let id = env.subject.id().to_owned();
            let result = match env.subject.kind() {
                AggregateKind::Cases => {
                    let key = (env.org.to_string(), id);
                    let s = cases.remove(&key).unwrap_or_default();
                    let r = case::check(&s, &env).map_err(|e| e.to_string());
                    cases.insert(key, if r.is_ok() { case::evolve(s, &env) } else { s });
                    r
                }
                AggregateKind::Referrals => {
                    let s = referrals.remove(&id).unwrap_or_default();
                    let consent = referral::sender_case(&env)
                        .and_then(|c| cases.get(&(env.org.to_string(), c.id().to_owned())))
                        .map(|c| c.consent().clone())
                        .unwrap_or_default();
                    let r = referral::check(&s, &env, &consent).map_err(|e| e.to_string());
                    referrals.insert(id, if r.is_ok() { referral::evolve(s, &env) } else { s });
                    r
                }
                AggregateKind::Activities => {
                    let s = activities.remove(&id).unwrap_or_default();
                    let r = activity::check(&s, &env).map_err(|e| e.to_string());
                    activities.insert(id, if r.is_ok() { activity::evolve(s, &env) } else { s });
                    r
                }
                _ => Ok(()),
            };
            if let Err(why) = result {
                violations.push(format!("{} {}: {why}", env.data.event_type(), env.subject));
            }
        }
        assert!(
            violations.is_empty(),
            "{} violations, first: {:?}",
            violations.len(),
            &violations[..violations.len().min(5)]
        );
    }
}
