//! Bearer tokens: created once, shown once, stored as a hash, revocable at once.

use crate::db::DbError;
use base64::Engine;
use rand::RngCore;
use relais_domain::OrgId;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An NGO's own systems: publish its own events, read its own views.
    Org,
    /// The shared coordination dashboard: continuity monitor and anonymous statistics.
    Coordinator,
    /// Read-only replay and verification of the full history.
    Auditor,
    /// Tokens and organisations.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Org => "org",
            Role::Coordinator => "coordinator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Org, Role::Coordinator, Role::Auditor, Role::Admin].into_iter().find(|r| r.as_str() == s)
    }
}

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (not its secret): what logs and access records name.
    pub token_id: Uuid,
    /// The organisation.
    pub org: OrgId,
    /// The role.
    pub role: Role,
    /// The organisation keeps cases (a service, not the coordinators): its auditors audit
    /// that organisation's personal data only (the registry's `keeps_cases`).
    pub org_keeps_cases: bool,
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TokenInfo {
    /// Id.
    pub id: Uuid,
    /// Organisation.
    pub org: String,
    /// Role.
    pub role: String,
    /// Label.
    pub label: String,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Revoked, if so.
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When it stops working, if it was given a lifetime.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Prefix of every Relais token, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "rls_";

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The organisation is not in the registry.
    #[error("unknown organisation {0}")]
    UnknownOrganisation(String),
    /// Database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The token store.
#[derive(Clone, Debug)]
pub struct TokenStore {
    pool: PgPool,
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

impl TokenStore {
    /// A store over the pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates a token and returns its id and secret; the secret is not kept.
    pub async fn create(&self, org: &OrgId, role: Role, label: &str) -> Result<(Uuid, String), TokenError> {
        self.create_as(Uuid::new_v4(), org, role, label, None).await
    }

    /// Checks that tokens may be created for `org`: it is in the registry, not retired.
    pub async fn check_organisation(&self, org: &OrgId) -> Result<(), TokenError> {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1 AND retired_at IS NULL)")
                .bind(org.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(DbError::from)?;
        if !known {
            return Err(TokenError::UnknownOrganisation(org.to_string()));
        }
        Ok(())
    }

    /// [`Self::create`] with the id chosen by the caller (who records the creation first) and
    /// an optional end of life.
    pub async fn create_as(
        &self,
        id: Uuid,
        org: &OrgId,
        role: Role,
        label: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<(Uuid, String), TokenError> {
        self.check_organisation(org).await?;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
        sqlx::query(
            "INSERT INTO api_tokens (id, org_id, role, secret_hash, label, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(org.as_str())
        .bind(role.as_str())
        .bind(hash(&secret))
        .bind(label)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(DbError::from)?;
        Ok((id, secret))
    }

    /// The principal of a valid token; `None` for an unknown, revoked or expired one.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Principal>, DbError> {
        if !secret.starts_with(TOKEN_PREFIX) || secret.len() > 128 {
            return Ok(None);
        }
        // A token of an organisation taken out of the registry (retired) no longer works.
        let row: Option<(Uuid, String, String, bool)> = sqlx::query_as(
            "SELECT t.id, t.org_id, t.role, o.keeps_cases FROM api_tokens t
             JOIN organisations o ON o.id = t.org_id AND o.retired_at IS NULL
             WHERE t.secret_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())",
        )
        .bind(hash(secret))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(token_id, org, role, org_keeps_cases)| {
            Some(Principal { token_id, org: OrgId::parse(&org).ok()?, role: Role::parse(&role)?, org_keeps_cases })
        }))
    }

    /// Every token, newest first.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, DbError> {
        sqlx::query_as(
            "SELECT id, org_id AS org, role, label, created_at, revoked_at, expires_at FROM api_tokens
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(DbError::from)
    }

    /// Revokes a token; true if it existed and was active.
    pub async fn revoke(&self, id: Uuid) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
