//! `/v1/events/{id}`: an event with its delivery log, and re-sending it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::http::extract::Signed;
use crate::http::{Shared, json_response, no_parameters, to_bytes};
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome, key_in_use};

pub(crate) fn event_json(record: &crate::store::EventRecord) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_str(&record.body).unwrap_or(serde_json::Value::Null);
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let status = match (&record.delivered_at, &record.next_attempt_at) {
        (_, Some(_)) => "pending",
        (Some(_), None) => "delivered",
        (None, None) => "parked",
    };
    let log: Vec<serde_json::Value> = record
        .deliveries
        .iter()
        .map(|d| {
            serde_json::json!({
                "attempted_at": rfc3339(d.attempted_at),
                "delivered": d.delivered,
                "error": d.error,
            })
        })
        .collect();
    if let Some(map) = event.as_object_mut() {
        map.insert(
            "delivery".to_owned(),
            serde_json::json!({
                "status": status,
                "attempts": record.attempts,
                "next_attempt_at": record.next_attempt_at.map(rfc3339),
                "log": log,
            }),
        );
    }
    event
}

/// One event with its delivery status and log.
pub(crate) async fn get_event(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let record = gw
        .store
        .event(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::missing("event", &id))?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&event_json(&record)),
        false,
    ))
}

/// Queues an event for delivery again now (with a fresh retry schedule), e.g. after the
/// merchant's endpoint was down longer than the schedule lasted.
pub(crate) async fn resend_event(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    no_parameters(&body)?;
    if gw.store.event(&merchant.id, &id).await?.is_none() {
        return Err(ApiError::missing("event", &id));
    }
    let begin = gw.store.claim_key(claim, &id).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |_| Err(key_in_use()),
        async |()| {
            gw.store.resend_event(&merchant.id, &id, now).await?;
            let record = gw
                .store
                .event(&merchant.id, &id)
                .await?
                .ok_or_else(|| ApiError::missing("event", &id))?;
            Ok(Outcome::Done(Answer::json(
                StatusCode::OK,
                &event_json(&record),
            )))
        },
    )
    .await
    .map(IntoResponse::into_response)
}
