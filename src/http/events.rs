//! `/v1/events/{id}`: an event with its delivery log, and re-sending it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::error::{ApiError, ErrorCode};
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
    let status = record.delivery_status().as_str();
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
    mut signed: Signed,
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

/// The filters of `GET /v1/events` (and the body of `POST /v1/events/resend`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventQuery {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    object_id: Option<String>,
    #[serde(default)]
    delivery_status: Option<String>,
    #[serde(default)]
    created_from: Option<String>,
    #[serde(default)]
    created_to: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    starting_after: Option<String>,
}

impl EventQuery {
    fn filter(&self) -> Result<crate::store::EventFilter, ApiError> {
        let time = |param: &'static str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|_| {
                            ApiError::invalid(
                                ErrorCode::ParameterInvalid,
                                param,
                                format!("{param} must be an RFC 3339 time"),
                            )
                        })
                })
                .transpose()
        };
        let delivery = self
            .delivery_status
            .as_deref()
            .map(|d| {
                crate::store::DeliveryStatus::parse(d).ok_or_else(|| {
                    ApiError::invalid(
                        ErrorCode::ParameterInvalid,
                        "delivery_status",
                        "delivery_status must be pending, delivered or parked",
                    )
                })
            })
            .transpose()?;
        Ok(crate::store::EventFilter {
            kind: self.kind.clone(),
            object_id: self.object_id.clone(),
            delivery,
            created_from: time("created_from", &self.created_from)?,
            created_to: time("created_to", &self.created_to)?,
            before_event: self.starting_after.clone(),
        })
    }
}

/// `GET /v1/events`: the merchant's events, newest first, filtered by type, object, delivery
/// status and creation time, a page at a time (`limit` 1-100, `starting_after` the last id of
/// the previous page). How a merchant finds what an outage parked.
pub(crate) async fn list_events(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, uri, .. } = signed;
    let query: EventQuery = crate::http::serde_urlencoded_strict(uri.query().unwrap_or(""))?;
    let limit = crate::http::page_limit(query.limit)?;
    if let Some(cursor) = &query.starting_after
        && gw.store.event(&merchant.id, cursor).await?.is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "starting_after",
            "no such event",
        ));
    }
    let mut ids = gw
        .store
        .event_ids(&merchant.id, query.filter()?, limit + 1)
        .await?;
    let has_more = ids.len() > limit as usize;
    ids.truncate(limit as usize);
    let mut data = Vec::with_capacity(ids.len());
    for id in &ids {
        if let Some(record) = gw.store.event(&merchant.id, id).await? {
            data.push(event_json(&record));
        }
    }
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": if has_more { ids.last().cloned() } else { None },
    });
    Ok(json_response(StatusCode::OK, to_bytes(&body), false))
}

/// Most parked events one `POST /v1/events/resend` queues (call again for more).
const RESEND_LIMIT: u32 = 1000;

/// `POST /v1/events/resend`: queues the merchant's parked events (all, or those matching
/// `type`, `object_id`, `created_from`, `created_to`) for delivery again now, each with a
/// fresh schedule, up to 1,000 a call; answers how many.
pub(crate) async fn resend_events(
    State(gw): State<Shared>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    let query: EventQuery = if body.is_empty() {
        crate::http::parse_body(b"{}")?
    } else {
        crate::http::parse_body(&body)?
    };
    let not_here = [
        ("delivery_status", query.delivery_status.is_some()),
        ("starting_after", query.starting_after.is_some()),
        ("limit", query.limit.is_some()),
    ];
    if let Some((param, _)) = not_here.iter().find(|(_, given)| *given) {
        return Err(ApiError::invalid(
            ErrorCode::ParameterUnknown,
            *param,
            "only parked events are resent, oldest first: filter by type, object_id, created_from, created_to",
        ));
    }
    let filter = query.filter()?;
    let begin = gw.store.claim_key(claim, "events:resend").await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |_| Err(key_in_use()),
        async |()| {
            let queued = gw
                .store
                .resend_parked(&merchant.id, filter, RESEND_LIMIT, now)
                .await?;
            Ok(Outcome::Done(Answer::json(
                StatusCode::OK,
                &serde_json::json!({
                    "object": "event_resend",
                    "queued": queued,
                    "has_more": queued == u64::from(RESEND_LIMIT),
                }),
            )))
        },
    )
    .await
    .map(IntoResponse::into_response)
}
