//! Bearer-token authentication. Tokens never reach logs or traces: only the token id does.

use crate::{AppState, error::ApiError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use relais_domain::OrgId;
use relais_projections::{Principal, Role};

/// The caller, authenticated by a valid bearer token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthenticated)?;
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(ApiError::unauthenticated)?;
        let principal = state
            .tokens
            .authenticate(secret.trim())
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot check the token now: {}", short(&e))))?
            .ok_or_else(ApiError::unauthenticated)?;
        tracing::Span::current().record("token_id", tracing::field::display(principal.token_id));
        Ok(Authenticated(principal))
    }
}

fn short(e: &dyn std::fmt::Display) -> String {
    tracing::error!(error = %e, "token check failed");
    "database unavailable".into()
}

impl Authenticated {
    /// Allows an organisation's own systems (role `org`) for that organisation only.
    pub fn require_org(&self, org: &str) -> Result<OrgId, ApiError> {
        let p = &self.0;
        if p.role != Role::Org {
            return Err(ApiError::forbidden(format!("role {} cannot read organisation views", p.role.as_str())));
        }
        if p.org.as_str() != org {
            return Err(ApiError::forbidden("a token reads only its own organisation's views"));
        }
        Ok(p.org.clone())
    }

    /// Allows the coordination role (continuity monitor and anonymous statistics) only.
    pub fn require_coordinator(&self) -> Result<(), ApiError> {
        if self.0.role != Role::Coordinator {
            return Err(ApiError::forbidden(format!(
                "role {} cannot read the continuity monitor or the shared statistics",
                self.0.role.as_str()
            )));
        }
        Ok(())
    }
}

impl Authenticated {
    /// Allows auditors only (role `auditor`). Every auditor replays the whole log and verifies
    /// it; an auditor of a service sees personal data of that service only ([`Self::audited_org`]).
    pub fn require_auditor(&self) -> Result<(), ApiError> {
        if self.0.role != Role::Auditor {
            return Err(ApiError::forbidden(format!(
                "role {} cannot audit; use an auditor token",
                self.0.role.as_str()
            )));
        }
        Ok(())
    }

    /// The organisation whose personal data this auditor may see: its own, for an auditor of
    /// a service (an organisation that keeps cases); `None` (all) for an auditor of the
    /// coordinators, who audit the whole federation.
    pub fn audited_org(&self) -> Option<OrgId> {
        (self.0.role == Role::Auditor && self.0.org_keeps_cases).then(|| self.0.org.clone())
    }

    /// Allows the organisation's own systems for that organisation, and auditors (of that
    /// organisation, or of the coordinators).
    pub fn require_org_or_auditor(&self, org: &str) -> Result<OrgId, ApiError> {
        if self.0.role == Role::Auditor {
            let org = OrgId::parse(org).map_err(|_| ApiError::not_found("no such organisation"))?;
            if self.audited_org().is_some_and(|own| own != org) {
                return Err(ApiError::forbidden(format!("an auditor of {} audits {} only", self.0.org, self.0.org)));
            }
            return Ok(org);
        }
        self.require_org(org)
    }
}
