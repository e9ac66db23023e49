//! The organisations registry as the database holds it (written from configuration at start).

use sqlx::PgPool;
use std::collections::HashSet;

/// Which of `ids` are organisations of the registry.
pub async fn known(pool: &PgPool, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT id FROM organisations WHERE id = ANY($1)").bind(ids).fetch_all(pool).await?;
    Ok(rows.into_iter().collect())
}
