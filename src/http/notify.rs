//! `/notify/{provider}/{merchant}/{account}`: provider notifications, verified by the
//! account's adapter and answered with exactly what the provider expects.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moongate_contract::{AckKind, RawNotification};

use crate::http::Shared;
use crate::metrics::OutcomeLabels;

pub(crate) async fn notify(
    State(gw): State<Shared>,
    Path((provider, merchant, account)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let raw = RawNotification {
        headers: &header_pairs,
        body: &body,
        received_at: gw.clock.wall(),
    };
    let known_provider = gw
        .config()
        .merchants
        .get(&merchant)
        .and_then(|m| m.account(&account))
        .is_some_and(|a| a.kind.as_str() == provider);
    if !known_provider {
        return (StatusCode::NOT_FOUND, "unknown notification endpoint").into_response();
    }
    let (adapter, accepted) = gw.handle_notification(&merchant, &account, &raw).await;
    let Some(adapter) = adapter else {
        return (StatusCode::NOT_FOUND, "unknown notification endpoint").into_response();
    };
    gw.metrics
        .notifications
        .get_or_create(&OutcomeLabels {
            source: provider.clone(),
            outcome: if accepted { "accepted" } else { "rejected" }.to_owned(),
        })
        .inc();
    let ack = adapter.notification_ack(if accepted {
        AckKind::Accepted
    } else {
        AckKind::Rejected
    });
    let mut response = (
        StatusCode::from_u16(ack.status).unwrap_or(StatusCode::OK),
        ack.body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ack.content_type),
    );
    response
}
