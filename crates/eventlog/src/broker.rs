//! Tenancy at the broker: the NATS accounts that let each organisation's own systems publish
//! and read **only their own events**, directly on NATS, whatever the gateway does.
//!
//! The layout (docs/DEPLOYMENT.md explains it for operators and integrators):
//! - the account [`STREAM_ACCOUNT`] owns the stream and holds the backend users: the gateway
//!   ([`GATEWAY_USER`]) and the projection workers ([`PROJECTOR_USER`], who may not publish
//!   events);
//! - every organisation has an account of its own (`ORG_<ID>`), without JetStream, holding one
//!   user named after the organisation. It imports from the stream account only its own slice:
//!   publishing on `relais.ev.<org>.>` (with the JetStream acknowledgement), and the
//!   `INFO`/`MSG.NEXT`/`ACK` subjects of its one durable consumer [`org_consumer_name`], which
//!   Relais creates filtered on `relais.ev.<org>.>`. The user's permissions allow exactly these
//!   subjects as well, so a try at anything else is a permission violation, not only silence.
//! - nothing else is exported: no stream info, no message get, no direct get, no consumer
//!   creation, no other organisation's subjects or consumer.
//!
//! Referrals addressed to an organisation are recorded on the *sender's* subjects; the broker
//! never lets the receiver read them. The receiver learns of a referral through Relais, which
//! shows it only what the referral carries under the client's consent.
//!
//! Passwords are never in the rendered file: each is a reference to an environment variable of
//! the nats-server process ([`password_variable`]), so the file can be kept in version control.

use async_nats::jetstream::{consumer, stream::Stream};
use relais_domain::OrgId;
use std::fmt::Write as _;

/// The account that owns the stream and holds the backend users.
pub const STREAM_ACCOUNT: &str = "RELAIS";
/// The backend user of the gateway (and of `relais serve --role all`).
pub const GATEWAY_USER: &str = "relais_gateway";
/// The backend user of the projection workers: everything in the stream account but publishing
/// events.
pub const PROJECTOR_USER: &str = "relais_projector";
/// The operators' user: every right in the stream account, used by no Relais process. Changing
/// a stream's settings or removing it is theirs alone: the backend users may not
/// ([`backend_publish_deny`]).
pub const ADMIN_USER: &str = "relais_admin";
/// The JetStream API prefix an organisation's client uses (`ContextBuilder::api_prefix`): the
/// organisation accounts reach the stream account's API only through imports mapped here.
pub const ORG_API_PREFIX: &str = "JS.RELAIS.API";

/// The name of an organisation's durable consumer: the only consumer its own systems may read.
pub fn org_consumer_name(org: &OrgId) -> String {
    format!("org-{org}")
}

/// The account of an organisation, for example `ORG_CAW_BRUSSEL`.
pub fn org_account(org: &OrgId) -> String {
    format!("ORG_{}", env_token(org.as_str()))
}

/// The NATS user of an organisation: its id.
pub fn org_user(org: &OrgId) -> String {
    org.to_string()
}

fn env_token(s: &str) -> String {
    s.to_ascii_uppercase().replace('-', "_")
}

/// The environment variable of the nats-server process that holds a user's password, for
/// example `RELAIS_NATS_PASSWORD_ORG_CAW_BRUSSEL` or `RELAIS_NATS_PASSWORD_GATEWAY`.
/// Passwords must be letters and digits starting with a letter: nats-server reads the value of
/// a variable as configuration, so a value such as `12` would be a number.
pub fn password_variable(user: &str) -> String {
    match user {
        GATEWAY_USER => "RELAIS_NATS_PASSWORD_GATEWAY".into(),
        PROJECTOR_USER => "RELAIS_NATS_PASSWORD_PROJECTOR".into(),
        ADMIN_USER => "RELAIS_NATS_PASSWORD_ADMIN".into(),
        org => format!("RELAIS_NATS_PASSWORD_ORG_{}", env_token(org)),
    }
}

/// Every user of the rendered configuration, backend users first.
pub fn users(organisations: &[OrgId]) -> Vec<String> {
    let mut out = vec![GATEWAY_USER.to_owned(), PROJECTOR_USER.to_owned(), ADMIN_USER.to_owned()];
    out.extend(organisations.iter().map(org_user));
    out
}

/// The JetStream API subjects the backend users may not publish on: removing, purging or
/// changing a stream, or deleting a message, in any stream of the account. No Relais process
/// does any of these, so a compromised gateway or projector cannot erase history through the
/// broker either.
pub fn backend_publish_deny() -> Vec<String> {
    ["STREAM.DELETE", "STREAM.PURGE", "STREAM.MSG.DELETE", "STREAM.UPDATE"]
        .into_iter()
        .map(|api| format!("$JS.API.{api}.>"))
        .collect()
}

/// The subjects an organisation's user may publish on, in its own account.
pub fn org_publish_allow(stream: &str, org: &OrgId) -> Vec<String> {
    let consumer = org_consumer_name(org);
    vec![
        crate::subjects::org_filter(org),
        format!("{ORG_API_PREFIX}.CONSUMER.INFO.{stream}.{consumer}"),
        format!("{ORG_API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]
}

fn quoted(items: &[String]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

/// Renders the `accounts { ... }` block of nats-server for `stream` and the organisations of
/// the registry. The same text is written to `deploy/nats/accounts.conf` by
/// `relais deploy nats-config` and used by the broker tests.
pub fn render_accounts(stream: &str, organisations: &[OrgId]) -> String {
    let mut orgs: Vec<&OrgId> = organisations.iter().collect();
    orgs.sort();
    orgs.dedup();
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "# NATS accounts of Relais: one account owning the stream {stream}, one per organisation.");
    let _ = writeln!(w, "# Generated by `relais deploy nats-config` from the organisations registry: regenerate,");
    let _ = writeln!(w, "# do not edit. Passwords are read from nats-server's environment (docs/DEPLOYMENT.md).");
    let _ = writeln!(w, "accounts {{");
    let _ = writeln!(w, "  {STREAM_ACCOUNT} {{");
    let _ = writeln!(w, "    jetstream: enabled");
    let _ = writeln!(w, "    users: [");
    let deny = backend_publish_deny();
    let _ = writeln!(
        w,
        "      {{ user: {GATEWAY_USER:?}, password: ${}, permissions: {{ publish: {{ deny: [{}] }} }} }}",
        password_variable(GATEWAY_USER),
        quoted(&deny)
    );
    let projector_deny: Vec<String> = std::iter::once(crate::subjects::all_events()).chain(deny).collect();
    let _ = writeln!(
        w,
        "      {{ user: {PROJECTOR_USER:?}, password: ${}, permissions: {{ publish: {{ deny: [{}] }} }} }}",
        password_variable(PROJECTOR_USER),
        quoted(&projector_deny)
    );
    let _ = writeln!(w, "      # the operators' own: no Relais process connects with it");
    let _ = writeln!(w, "      {{ user: {ADMIN_USER:?}, password: ${} }}", password_variable(ADMIN_USER));
    let _ = writeln!(w, "    ]");
    let _ = writeln!(w, "    exports: [");
    for org in &orgs {
        let account = org_account(org);
        let consumer = org_consumer_name(org);
        let _ = writeln!(w, "      # {org}: its own subjects and its own durable consumer, nothing else");
        let _ = writeln!(w, "      {{ service: {:?}, accounts: [{account}] }}", crate::subjects::org_filter(org));
        let _ =
            writeln!(w, "      {{ service: \"$JS.API.CONSUMER.INFO.{stream}.{consumer}\", accounts: [{account}] }}");
        let _ = writeln!(
            w,
            "      {{ service: \"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}\", accounts: [{account}], response_type: stream }}"
        );
        let _ = writeln!(w, "      {{ service: \"$JS.ACK.{stream}.{consumer}.>\", accounts: [{account}] }}");
    }
    let _ = writeln!(w, "    ]");
    let _ = writeln!(w, "  }}");
    for org in &orgs {
        let account = org_account(org);
        let consumer = org_consumer_name(org);
        let _ = writeln!(w, "  {account} {{");
        let _ = writeln!(w, "    users: [");
        let _ = writeln!(
            w,
            "      {{ user: {:?}, password: ${}, permissions: {{",
            org_user(org),
            password_variable(&org_user(org))
        );
        let _ = writeln!(w, "          publish: {{ allow: [{}] }}", quoted(&org_publish_allow(stream, org)));
        let _ = writeln!(w, "          subscribe: {{ allow: [\"_INBOX.>\"] }} }} }}");
        let _ = writeln!(w, "    ]");
        let _ = writeln!(w, "    imports: [");
        let _ = writeln!(
            w,
            "      {{ service: {{ account: {STREAM_ACCOUNT}, subject: {:?} }} }}",
            crate::subjects::org_filter(org)
        );
        for api in ["CONSUMER.INFO", "CONSUMER.MSG.NEXT"] {
            let _ = writeln!(
                w,
                "      {{ service: {{ account: {STREAM_ACCOUNT}, subject: \"$JS.API.{api}.{stream}.{consumer}\" }}, to: \"{ORG_API_PREFIX}.{api}.{stream}.{consumer}\" }}"
            );
        }
        let _ = writeln!(
            w,
            "      {{ service: {{ account: {STREAM_ACCOUNT}, subject: \"$JS.ACK.{stream}.{consumer}.>\" }} }}"
        );
        let _ = writeln!(w, "    ]");
        let _ = writeln!(w, "  }}");
    }
    let _ = writeln!(w, "}}");
    out
}

/// Creates each organisation's durable consumer (`org-<org>`, filtered on its own subjects,
/// from the first event, explicit acks) if it does not exist. An existing consumer is left as
/// it is (its position belongs to the organisation), but one that reads more than the
/// organisation's own subjects is refused: the organisation's account reaches it through its
/// imports, so such a consumer (recreated by hand with a wider filter, or none) would hand it
/// every other organisation's events.
pub async fn ensure_org_consumers(stream: &Stream, organisations: &[OrgId]) -> Result<(), crate::ConnectError> {
    for org in organisations {
        let name = org_consumer_name(org);
        let own = crate::subjects::org_filter(org);
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("the own events of {org}, for its own systems")),
            filter_subject: crate::subjects::org_filter(org),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        };
        let err = |detail: String| crate::ConnectError::Stream {
            stream: stream.cached_info().config.name.clone(),
            detail: format!("consumer {name}: {detail}"),
        };
        let consumer = stream.get_or_create_consumer(&name, config).await.map_err(|e| err(e.to_string()))?;
        let existing = &consumer.cached_info().config;
        let filters: Vec<String> = std::iter::once(&existing.filter_subject)
            .chain(&existing.filter_subjects)
            .filter(|f| !f.is_empty())
            .cloned()
            .collect();
        if filters.is_empty() || filters.iter().any(|f| *f != own) {
            let reads = if filters.is_empty() { "every subject".to_owned() } else { quoted(&filters) };
            return Err(err(format!(
                "it reads {reads}, not only {own}: {org} would read other organisations' events through it; delete it and Relais recreates it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).expect("valid")
    }

    #[test]
    fn names_of_accounts_users_and_variables_cannot_collide() {
        assert_eq!(org_account(&org("caw-brussel")), "ORG_CAW_BRUSSEL");
        assert_eq!(password_variable("caw-brussel"), "RELAIS_NATS_PASSWORD_ORG_CAW_BRUSSEL");
        assert_eq!(password_variable(GATEWAY_USER), "RELAIS_NATS_PASSWORD_GATEWAY");
        // An organisation called like a backend user gets a variable of its own: organisation
        // ids have no '_', backend users do.
        assert_ne!(password_variable("relais-gateway"), password_variable(GATEWAY_USER));
        assert_ne!(org_user(&org("relais-gateway")), GATEWAY_USER);
        assert_eq!(org_consumer_name(&org("apo")), "org-apo");
    }

    #[test]
    fn an_organisation_is_granted_only_its_own_slice() {
        let text = render_accounts("RELAIS", &[org("apo"), org("dsr")]);
        let apo_account: String =
            text.split("  ORG_APO {").nth(1).expect("account").split("  ORG_DSR {").next().expect("end").to_owned();
        assert!(apo_account.contains("\"relais.ev.apo.>\""));
        assert!(!apo_account.contains("dsr"), "apo's account names nothing of dsr:\n{apo_account}");
        assert!(!apo_account.contains("relais.ev.>"));
        assert!(!apo_account.contains("STREAM."));
        assert!(!apo_account.contains("DIRECT"));
        assert!(!apo_account.contains("CREATE"));
        assert!(text.contains("{ service: \"relais.ev.dsr.>\", accounts: [ORG_DSR] }"));
        assert_eq!(text.matches("jetstream: enabled").count(), 1, "only the stream account has JetStream");
        assert!(!text.contains("password: \""), "no password is written in the file");
    }
}
