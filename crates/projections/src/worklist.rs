//! The work list of an organisation: what needs action now, read from the views (it is a
//! query, not a projection of its own):
//! - `referral_to_answer`: a referral to the organisation not yet accepted or declined;
//! - `referral_first_contact`: a referral the organisation accepted, without first contact;
//! - `release_without_aftercare`: an open case whose release is due within the window (or
//!   happened within it) and has no after-care started;
//! - `dropout_without_feedback`: a participant the organisation registered who dropped out
//!   and has had no feedback conversation.
//!
//! Items come oldest first (`since`): the longest waiting on top.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use relais_domain::OrgId;
use serde::Serialize;
use sqlx::PgPool;

/// The kinds of work-list item.
pub const KINDS: &[&str] =
    &["referral_to_answer", "referral_first_contact", "release_without_aftercare", "dropout_without_feedback"];

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WorkItem {
    /// One of [`KINDS`].
    pub kind: String,
    /// Since when it waits.
    pub since: DateTime<Utc>,
    /// What it is about: `referrals/<id>`, `cases/<id>` or `activities/<id>`.
    pub subject: String,
    /// The organisation's reference of the client, when it has one (and it was not erased).
    pub client_ref: Option<String>,
    /// A stage, a release date or a dropout reason.
    pub detail: Option<String>,
    /// A tie-breaker for paging.
    #[serde(skip)]
    pub item_key: String,
}

/// A page of an organisation's work list. `release_days`: how far ahead a release counts;
/// `after`: (since, kind, item key) of the last item of the previous page.
pub async fn list(
    pool: &PgPool,
    org: &OrgId,
    today: NaiveDate,
    release_days: i64,
    kind: Option<&str>,
    after: Option<&(DateTime<Utc>, String, String)>,
    limit: i64,
) -> Result<Vec<WorkItem>, sqlx::Error> {
    let horizon = today + Duration::days(release_days);
    let since_release = today - Duration::days(release_days);
    sqlx::query_as(
        "SELECT * FROM (
            SELECT 'referral_to_answer' AS kind, made_at AS since, 'referrals/' || referral_id AS subject,
                receiver_client_ref AS client_ref, stage AS detail, referral_id AS item_key
            FROM referrals WHERE receiver_org = $1 AND stage IN ('made', 'received')
          UNION ALL
            SELECT 'referral_first_contact', accepted_at, 'referrals/' || referral_id, receiver_client_ref, stage,
                referral_id
            FROM referrals WHERE receiver_org = $1 AND stage = 'accepted'
          UNION ALL
            SELECT 'release_without_aftercare',
                (coalesce(release_scheduled_on, released_on) - $10::int4)::timestamp AT TIME ZONE 'Europe/Brussels',
                'cases/' || case_id, client_ref,
                coalesce(release_scheduled_on, released_on)::text, case_id
            FROM caseload WHERE org_id = $1 AND status = 'open' AND aftercare_started_at IS NULL
              AND (release_scheduled_on BETWEEN $2 AND $3 OR released_on BETWEEN $4 AND $2)
          UNION ALL
            SELECT 'dropout_without_feedback', dropped_out_at, 'activities/' || activity_id, client_ref,
                dropout_reason, activity_id || '/' || key_id::text
            FROM activity_participants WHERE org_id = $1 AND status = 'dropped_out' AND feedback_at IS NULL
         ) w
         WHERE ($5::text IS NULL OR kind = $5)
           AND ($6::timestamptz IS NULL OR (since, kind, item_key) > ($6, $7, $8))
         ORDER BY since, kind, item_key LIMIT $9",
    )
    .bind(org.as_str())
    .bind(today)
    .bind(horizon)
    .bind(since_release)
    .bind(kind)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.clone()))
    .bind(after.map(|a| a.2.clone()))
    .bind(limit)
    .bind(release_days as i32)
    .fetch_all(pool)
    .await
}
