//! The data subject's rights over HTTP: erasure (`POST /v1/orgs/{org}/clients/{client}/erasure`),
//! subject access (`GET /v1/orgs/{org}/clients/{client}/export`), and the client's data key for
//! an organisation's own system that publishes directly on NATS
//! (`POST /v1/orgs/{org}/clients/{client}/key`). All three are for the organisation's own
//! systems (role `org`) and its own clients only; access records name the client by key id,
//! never by reference.

use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use relais_domain::OrgId;
use relais_domain::events::{ErasureReason, check_client_ref};
use relais_projections::KeyError;
use relais_projections::erasure::{Eraser, ErasureError};
use relais_projections::subject_access::{self, ClientExport, ExportError};
use serde::Deserialize;
use serde_json::json;

fn check_ref(client: &str) -> Result<(), ApiError> {
    check_client_ref("client", client).map_err(|e| ApiError::invalid_parameter("client", e.detail))
}

fn no_such_client() -> ApiError {
    ApiError::not_found("the organisation has no such client")
}

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Db(e) => {
            tracing::error!(error = %e, "key store unavailable");
            ApiError::unavailable("the key store is unavailable; retry later")
        }
        other => ApiError::internal(&other),
    }
}

/// Responses that hold personal data or keys are never cached.
fn no_store(mut response: Response) -> Response {
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErasureRequest {
    #[serde(default)]
    reason: Option<ErasureReason>,
}

/// `POST /v1/orgs/{org}/clients/{client}/erasure`: erases a client by destroying their data
/// key and recording `relais.client.erased`. 202 when this request erased the client, 200 when
/// they were erased before, 404 for an unknown client. An optional JSON body
/// `{"reason": "client_request" | "retention_expired"}` gives the reason (default
/// `client_request`).
#[tracing::instrument(name = "privacy.erasure", skip_all, fields(org = %org))]
pub async fn post_erasure(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, client)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let org: OrgId = auth.require_org(&org)?;
    check_ref(&client)?;
    let request: ErasureRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ErasureRequest::default()
    } else {
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(|e| {
            // The field at fault (`/reason`, an unknown one), or the body itself when it is not
            // a JSON object.
            let pointer = match e.path().to_string().as_str() {
                "." => String::new(),
                path => format!("/{}", path.replace('.', "/")),
            };
            ApiError::invalid(pointer, format!("not an erasure request: {}", e.inner()))
        })?
    };
    let reason = request.reason.unwrap_or(ErasureReason::ClientRequest);
    let eraser = Eraser::new(state.keys.clone(), state.log.clone(), state.db.pool().clone());
    let actor = format!("token:{}", auth.0.token_id);
    let info = state.keys.client_info(&org, &client).await.map_err(key_error)?.ok_or_else(no_such_client)?;
    let resource = subject_access::client_resource(&org, info.key_id);
    // Recorded before the key is destroyed: no erasure happens unrecorded (a failed attempt
    // leaves its record, which is true: it was asked for).
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "client.erase",
        &resource,
        json!({ "reason": reason }),
    )
    .await?;
    let erasure = eraser.erase_key(&org, info.key_id, reason, &actor).await.map_err(|e| match e {
        ErasureError::UnknownClient => no_such_client(),
        ErasureError::Keys(e) => key_error(e),
        ErasureError::Db(e) => ApiError::from(e),
        ErasureError::Log(e) => {
            tracing::error!(error = %e, "erasure event not recorded");
            ApiError::unavailable("the event log is unavailable; retry: the retry completes the erasure")
        }
        ErasureError::Read(e) => {
            tracing::error!(error = %e, "the event log could not be read");
            ApiError::unavailable("the event log is unavailable; retry")
        }
        ErasureError::EventPending(_) => ApiError::unavailable(
            "the client's key is destroyed; the erasure's event is not recorded yet (another message holds its id \
             in the log for now); retry: the retry completes the erasure",
        ),
    })?;
    let status = if erasure.newly_erased { StatusCode::ACCEPTED } else { StatusCode::OK };
    let body = json!({
        "key_id": erasure.key_id,
        "erased": true,
        "erased_at": erasure.erased_at,
        "event_id": erasure.event_id,
        "sequence": erasure.sequence,
        "reason": reason,
    });
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/orgs/{org}/clients/{client}/export`: everything the organisation holds about the
/// client (subject access), or, once erased, only that the client was erased and when.
#[tracing::instrument(name = "privacy.export", skip_all, fields(org = %org))]
pub async fn get_export(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, client)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let org: OrgId = auth.require_org(&org)?;
    check_ref(&client)?;
    let info = state.keys.client_info(&org, &client).await.map_err(key_error)?.ok_or_else(no_such_client)?;
    let resource = subject_access::client_resource(&org, info.key_id);
    let erased = info.erased_at.is_some();
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "client.export",
        &resource,
        json!({ "erased": erased }),
    )
    .await?;
    let export = if erased {
        ClientExport::erased(&org, info.key_id, info.erased_at)
    } else {
        subject_access::export(state.db.pool(), &state.keys, &state.stream, &org, &client, info.key_id).await.map_err(
            |e| match e {
                ExportError::Db(e) => ApiError::from(e),
                ExportError::Keys(e) => key_error(e),
                ExportError::Log(e) => {
                    tracing::error!(error = %e, "event log unavailable for an export");
                    ApiError::unavailable("the event log is unavailable; retry later")
                }
            },
        )?
    };
    Ok(no_store((StatusCode::OK, Json(export)).into_response()))
}

/// `POST /v1/orgs/{org}/clients/{client}/key`: the client's data key (created on first use),
/// for an organisation's own system that seals events before publishing them directly on NATS
/// (docs/PRIVACY.md, "Publishing directly on NATS"). 409 once the client is erased.
#[tracing::instrument(name = "privacy.key", skip_all, fields(org = %org))]
pub async fn post_key(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, client)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let org: OrgId = auth.require_org(&org)?;
    check_ref(&client)?;
    let (key_id, key) = state.keys.key_for_client(&org, &client).await.map_err(|e| match e {
        KeyError::ClientErased => ApiError::client_erased("?client"),
        other => key_error(other),
    })?;
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "client.key",
        &subject_access::client_resource(&org, key_id),
        json!({}),
    )
    .await?;
    let body = json!({
        "key_id": key_id,
        "key": base64::engine::general_purpose::STANDARD.encode(key.as_bytes()),
        "algorithm": "XChaCha20-Poly1305",
        "associated_data": "event id (16 bytes) followed by key id (16 bytes)",
    });
    Ok(no_store((StatusCode::OK, Json(body)).into_response()))
}
