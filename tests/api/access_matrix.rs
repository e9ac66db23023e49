//! Who may do what at the gateway: every endpoint × every caller (no token, an unknown or
//! revoked token, each role) × the caller's own organisation and another one, against the
//! expected status.
//!
//! The table [`ENDPOINTS`] is the whole specification: to cover a new endpoint, add a row.
//! Path placeholders are filled per target organisation from the fixture (`{org}`, `{case}`,
//! `{client}`, `{event_type}`, `{version}`); add a placeholder in [`Fixture::value`] if a new
//! endpoint needs one. Besides the status, every request is checked for:
//! - problem details (`application/problem+json`) on every error;
//! - no case or client identifier of another organisation in any answer it is not allowed;
//! - no case or client identifier of any organisation in any answer to a coordinator;
//! - nothing stored by a refused request, and an access record for every allowed read of
//!   case-level data, naming the caller's token;
//! - the same answer whether or not a resource of another organisation exists, so that a
//!   refusal cannot tell.

use crate::helpers::*;
use relais_projections::{Role, TokenStore};
use serde_json::Value;
use std::fmt::Write as _;
use uuid::Uuid;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone, without a token.
    Public,
    /// A valid token of one of these roles; other roles get 403, no or a bad token 401.
    Roles {
        /// The roles allowed.
        roles: &'static [Role],
        /// Whether the endpoint is about one organisation (its `{org}`, or an event's source):
        /// then only that organisation's tokens are allowed and others get `other_org`.
        org_scoped: bool,
        /// The status for an allowed role of another organisation: 403, or 404 where the
        /// existence of the resource itself must not leak.
        other_org: u16,
    },
}

/// What the request carries.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    /// A JSON body of this media type, made for the target organisation.
    Json(&'static str, fn(&str) -> Value),
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy)]
struct Endpoint {
    method: &'static str,
    /// The path, with placeholders.
    path: &'static str,
    body: Body,
    access: Access,
    /// The status of an allowed call.
    ok: u16,
    /// An allowed call reads case-level data: it must leave an access record.
    case_level: bool,
    /// An allowed call stores events: the stream grows. Any refused call stores nothing.
    stores: bool,
    /// Roles whose answers may name other organisations' cases (an auditor's replay of the
    /// whole log); for every other caller no other organisation's case or client appears.
    reveals_other_orgs_to: &'static [Role],
}

const ORG_ONLY: &[Role] = &[Role::Org];
const COORDINATOR_ONLY: &[Role] = &[Role::Coordinator];
const AUDITOR_ONLY: &[Role] = &[Role::Auditor];

fn new_case(org: &str) -> Value {
    let id = Uuid::new_v4().simple().to_string();
    guidance_requested(org, &format!("case-{id}"), &format!("cl-{id}"))
}

fn new_case_batch(org: &str) -> Value {
    Value::Array(vec![new_case(org), new_case(org)])
}

/// Every endpoint of the gateway. Add a row per new endpoint.
const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/healthz",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/readyz",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/openapi.json",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/catalogue",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/catalogue/{event_type}/{version}",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "POST",
        path: "/v1/events",
        body: Body::Json("application/cloudevents+json", new_case),
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 201,
        case_level: false,
        stores: true,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "POST",
        path: "/v1/events",
        body: Body::Json("application/cloudevents-batch+json", new_case_batch),
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 201,
        case_level: false,
        stores: true,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/cases",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/cases/{case}",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/quarantine",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/clients/{client}/export",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/cases/{case}/timeline",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/referrals",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/coming-up",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/activities",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/activities/{activity}",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/worklist",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/statistics",
        body: Body::None,
        access: Access::Roles { roles: ORG_ONLY, org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/statistics",
        body: Body::None,
        access: Access::Roles { roles: COORDINATOR_ONLY, org_scoped: false, other_org: 403 },
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/monitor/alerts",
        body: Body::None,
        access: Access::Roles { roles: COORDINATOR_ONLY, org_scoped: false, other_org: 403 },
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/monitor/persons",
        body: Body::None,
        access: Access::Roles { roles: COORDINATOR_ONLY, org_scoped: false, other_org: 403 },
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/audit/events",
        body: Body::None,
        access: Access::Roles { roles: AUDITOR_ONLY, org_scoped: false, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: AUDITOR_ONLY,
    },
    Endpoint {
        method: "GET",
        path: "/v1/audit/access",
        body: Body::None,
        access: Access::Roles { roles: AUDITOR_ONLY, org_scoped: false, other_org: 403 },
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: AUDITOR_ONLY,
    },
    Endpoint {
        method: "GET",
        path: "/v1/orgs/{org}/cases/{case}?as_of=2100-01-01T00:00:00Z",
        body: Body::None,
        access: Access::Roles { roles: &[Role::Org, Role::Auditor], org_scoped: true, other_org: 403 },
        ok: 200,
        case_level: true,
        stores: false,
        reveals_other_orgs_to: &[],
    },
    Endpoint {
        method: "GET",
        path: "/v1/audit/public-key",
        body: Body::None,
        access: Access::Public,
        ok: 200,
        case_level: false,
        stores: false,
        reveals_other_orgs_to: &[],
    },
];
/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    NoToken,
    UnknownToken,
    RevokedToken,
    Role(Role),
}

const CALLERS: &[Caller] = &[
    Caller::NoToken,
    Caller::UnknownToken,
    Caller::RevokedToken,
    Caller::Role(Role::Org),
    Caller::Role(Role::Coordinator),
    Caller::Role(Role::Auditor),
    Caller::Role(Role::Admin),
];

/// Whose data the call is about.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Own,
    Other,
}

/// The caller's organisation and another one, each with a case and a client.
const OWN: &str = "apo";
const OTHER: &str = "dsr";

struct Fixture {
    own_case: String,
    other_case: String,
}

impl Fixture {
    fn case(&self, org: &str) -> &str {
        if org == OWN { &self.own_case } else { &self.other_case }
    }

    fn activity(&self, org: &str) -> String {
        format!("act-{}", self.case(org).trim_start_matches("case-"))
    }

    fn client(&self, org: &str) -> String {
        format!("cl-{}", self.case(org).trim_start_matches("case-"))
    }

    /// The value of a placeholder for a target organisation; `missing` names resources that
    /// do not exist.
    fn value(&self, name: &str, org: &str, missing: bool) -> String {
        match name {
            "org" => org.to_owned(),
            "case" if missing => "case-that-does-not-exist".to_owned(),
            "case" => self.case(org).to_owned(),
            "client" if missing => "cl-that-does-not-exist".to_owned(),
            "client" => self.client(org),
            "activity" => self.activity(org),
            "event_type" => "relais.guidance.requested".to_owned(),
            "version" => "v1".to_owned(),
            other => panic!("no value for placeholder {{{other}}}: add it to Fixture::value"),
        }
    }

    fn path(&self, template: &str, org: &str, missing: bool) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            let end = start + rest[start..].find('}').expect("closed placeholder");
            out.push_str(&rest[..start]);
            out.push_str(&self.value(&rest[start + 1..end], org, missing));
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Identifiers of an organisation that must not appear where it may not be seen.
    fn secrets(&self, org: &str) -> Vec<String> {
        vec![self.case(org).to_owned(), self.client(org)]
    }
}

fn expected(endpoint: &Endpoint, caller: Caller, target: Target) -> u16 {
    match (endpoint.access, caller) {
        (Access::Public, _) => endpoint.ok,
        (Access::Roles { .. }, Caller::NoToken | Caller::UnknownToken | Caller::RevokedToken) => 401,
        (Access::Roles { roles, .. }, Caller::Role(role)) if !roles.contains(&role) => 403,
        (Access::Roles { org_scoped: true, other_org, .. }, Caller::Role(_)) if target == Target::Other => other_org,
        (Access::Roles { .. }, Caller::Role(_)) => endpoint.ok,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

async fn call(app: &TestApp, endpoint: &Endpoint, token: Option<&str>, path: &str, target_org: &str) -> Answer {
    let method = reqwest::Method::from_bytes(endpoint.method.as_bytes()).expect("method");
    let mut request = app.http.request(method, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Body::Json(media_type, make) = endpoint.body {
        request = request.header("content-type", media_type).body(make(target_org).to_string());
    }
    let r = request.send().await.expect("request sent");
    let status = r.status().as_u16();
    let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Answer { status, content_type, body: r.text().await.unwrap_or_default() }
}

async fn access_records(app: &TestApp) -> (i64, Option<Uuid>) {
    sqlx::query_as("SELECT count(*), (SELECT token_id FROM access_log ORDER BY id DESC LIMIT 1) FROM access_log")
        .fetch_one(&app.pool)
        .await
        .expect("access log")
}

#[tokio::test]
async fn every_role_on_every_endpoint_for_its_own_and_another_organisation() {
    let app = spawn_app().await;
    // The fixture: one case in each organisation, recorded by each organisation itself.
    let fixture = Fixture {
        own_case: format!("case-{}", Uuid::new_v4().simple()),
        other_case: format!("case-{}", Uuid::new_v4().simple()),
    };
    for org in [OWN, OTHER] {
        let token = app.token(org, Role::Org).await;
        let event = guidance_requested(org, fixture.case(org), &fixture.client(org));
        assert_eq!(app.post_event(&token, &event).await.status(), 201);
        let planned = relais_domain::events::spec("relais.activity.planned").expect("in the catalogue").example_data();
        let activity = crate::helpers::event(
            org,
            "relais.activity.planned",
            &format!("activities/{}", fixture.activity(org)),
            planned,
        );
        assert_eq!(app.post_event(&token, &activity).await.status(), 201);
    }
    app.wait_for_views().await;

    // Every caller's token belongs to OWN, whatever its role.
    let store = TokenStore::new(app.pool.clone());
    let mut tokens = std::collections::HashMap::new();
    let mut token_ids = std::collections::HashMap::new();
    for role in [Role::Org, Role::Coordinator, Role::Auditor, Role::Admin] {
        let (id, secret) =
            store.create(&relais_domain::OrgId::parse(OWN).expect("valid"), role, "matrix").await.expect("token");
        tokens.insert(Caller::Role(role).name(), secret);
        token_ids.insert(Caller::Role(role).name(), id);
    }
    let (revoked_id, revoked) =
        store.create(&relais_domain::OrgId::parse(OWN).expect("valid"), Role::Org, "revoked").await.expect("token");
    assert!(store.revoke(revoked_id).await.expect("revoked"));
    tokens.insert(Caller::RevokedToken.name(), revoked);
    tokens.insert(Caller::UnknownToken.name(), "rls_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned());

    let mut failures = String::new();
    let mut checked = 0;
    for endpoint in ENDPOINTS {
        let scoped = matches!(endpoint.access, Access::Roles { org_scoped: true, .. });
        let targets: &[Target] = if scoped { &[Target::Own, Target::Other] } else { &[Target::Own] };
        for &caller in CALLERS {
            for &target in targets {
                let org = if target == Target::Own { OWN } else { OTHER };
                let want = expected(endpoint, caller, target);
                let token = tokens.get(&caller.name()).map(String::as_str);
                let path = fixture.path(endpoint.path, org, false);
                let what = format!("{} {} as {} for {target:?}", endpoint.method, endpoint.path, caller.name());
                let stored_before = app.stream_messages().await;
                let (records_before, _) = access_records(&app).await;
                let answer = call(&app, endpoint, token, &path, org).await;
                checked += 1;
                let allowed = want == endpoint.ok;
                if answer.status != want {
                    let _ = writeln!(failures, "{what}: {} (expected {want}) {}", answer.status, answer.body);
                    continue;
                }
                if answer.status >= 400 && answer.content_type != "application/problem+json" {
                    let _ = writeln!(failures, "{what}: error answered as {:?}", answer.content_type);
                }
                // No caller sees another organisation's case or client (unless the row lets
                // its role see every organisation, as a replay does for an auditor), and a
                // coordinator sees no organisation's.
                let mut hidden = Vec::new();
                if !matches!(caller, Caller::Role(r) if endpoint.reveals_other_orgs_to.contains(&r)) {
                    hidden.extend(fixture.secrets(OTHER));
                }
                if caller == Caller::Role(Role::Coordinator) {
                    hidden.extend(fixture.secrets(OWN));
                }
                for secret in &hidden {
                    if answer.body.contains(secret.as_str()) {
                        let _ = writeln!(failures, "{what}: the answer shows {secret}");
                    }
                }
                let stored_after = app.stream_messages().await;
                match (allowed && endpoint.stores, stored_after > stored_before) {
                    (true, false) => {
                        let _ = writeln!(failures, "{what}: allowed but nothing stored");
                    }
                    (false, true) => {
                        let _ = writeln!(failures, "{what}: stored {} events", stored_after - stored_before);
                    }
                    _ => {}
                }
                if allowed && endpoint.case_level {
                    let (records_after, last) = access_records(&app).await;
                    if records_after <= records_before || last != token_ids.get(&caller.name()).copied() {
                        let _ = writeln!(failures, "{what}: read of case-level data not recorded for its token");
                    }
                }
                // A refusal reads the same whether or not the resource exists.
                let names_resource = endpoint.path.contains("{case}") || endpoint.path.contains("{client}");
                if names_resource && !allowed {
                    let missing = fixture.path(endpoint.path, org, true);
                    let other = call(&app, endpoint, token, &missing, org).await;
                    if (other.status, &other.body) != (answer.status, &answer.body) {
                        let _ = writeln!(
                            failures,
                            "{what}: existing and missing resources are told apart: {} {} / {} {}",
                            answer.status, answer.body, other.status, other.body
                        );
                    }
                }
                // An allowed caller of its own organisation is told a resource does not exist.
                if names_resource && allowed && target == Target::Own && !endpoint.stores {
                    let missing = fixture.path(endpoint.path, org, true);
                    let other = call(&app, endpoint, token, &missing, org).await;
                    if other.status != 404 || other.content_type != "application/problem+json" {
                        let _ = writeln!(failures, "{what}: a missing resource answered {}", other.status);
                    }
                }
            }
        }
    }
    assert!(checked >= ENDPOINTS.len() * CALLERS.len(), "{checked} checks");
    assert!(failures.is_empty(), "the access matrix does not hold:\n{failures}");
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::NoToken => "no token".into(),
            Caller::UnknownToken => "an unknown token".into(),
            Caller::RevokedToken => "a revoked token".into(),
            Caller::Role(r) => format!("role {}", r.as_str()),
        }
    }
}
