//! The access log: every read of case-level data and every replay is recorded (who, what,
//! when), so that auditors and clients (subject access) can see who read what.

use crate::tokens::Principal;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// One access record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AccessRecord {
    /// Sequence of the record.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The token used (its id, never its secret).
    pub token_id: uuid::Uuid,
    /// The token's organisation.
    pub org_id: String,
    /// The token's role.
    pub role: String,
    /// What was done, for example `cases.list`, `case.read`, `audit.replay`.
    pub action: String,
    /// What was read, for example `orgs/apo/cases/3f2a…`.
    pub resource: String,
    /// The filter or parameters of the read.
    pub detail: serde_json::Value,
}

/// Records an access. Called before the data is answered: a read that cannot be recorded is
/// not served.
pub async fn record(
    pool: &PgPool,
    who: &Principal,
    action: &str,
    resource: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO access_log (token_id, org_id, role, action, resource, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(who.token_id)
    .bind(who.org.as_str())
    .bind(who.role.as_str())
    .bind(action)
    .bind(resource)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records one access per resource of a read that showed several (one statement): each
/// client's record names what was read of them.
pub async fn record_each(
    pool: &PgPool,
    who: &Principal,
    action: &str,
    resources: &[String],
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    if resources.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO access_log (token_id, org_id, role, action, resource, detail)
         SELECT $1, $2, $3, $4, r, $6 FROM UNNEST($5::text[]) AS r",
    )
    .bind(who.token_id)
    .bind(who.org.as_str())
    .bind(who.role.as_str())
    .bind(action)
    .bind(resources)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records an access made on the command line with the operator's configuration (no token):
/// token id nil, organisation empty, role `operator`; `detail` names the system user.
pub async fn record_operator(
    pool: &PgPool,
    action: &str,
    resource: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO access_log (token_id, org_id, role, action, resource, detail) VALUES ($1, '', 'operator', $2, $3, $4)",
    )
    .bind(uuid::Uuid::nil())
    .bind(action)
    .bind(resource)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// Filter of an access-log listing.
#[derive(Debug, Clone, Default)]
pub struct AccessFilter {
    /// Only records whose resource starts with this prefix.
    pub resource_prefix: Option<String>,
    /// Only records of this organisation's tokens.
    pub org: Option<String>,
    /// Only records about this organisation (`orgs/<org>/...`) or made by its tokens: what an
    /// auditor of one organisation may see.
    pub scope: Option<String>,
    /// Only records after this id (cursor).
    pub after_id: Option<i64>,
    /// Page size.
    pub limit: i64,
}

/// Lists access records, oldest first.
pub async fn list(pool: &PgPool, filter: &AccessFilter) -> Result<Vec<AccessRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, at, token_id, org_id, role, action, resource, detail FROM access_log
         WHERE ($1::text IS NULL OR starts_with(resource, $1))
           AND ($2::text IS NULL OR org_id = $2)
           AND ($3::int8 IS NULL OR id > $3)
           AND ($5::text IS NULL OR org_id = $5 OR starts_with(resource, 'orgs/' || $5 || '/'))
         ORDER BY id LIMIT $4",
    )
    .bind(&filter.resource_prefix)
    .bind(&filter.org)
    .bind(filter.after_id)
    .bind(filter.limit)
    .bind(&filter.scope)
    .fetch_all(pool)
    .await
}
