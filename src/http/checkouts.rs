//! `POST/GET /v1/checkouts` (signed, for storefronts).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::cashier::State as Stage;
use crate::error::ApiError;
use crate::http::extract::Signed;
use crate::http::{Shared, parse_body};
use crate::service::checkouts::{CreateCheckoutBody, current, validate_checkout, with_cashier_url};
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome};

/// `POST /v1/checkouts`.
pub async fn create_checkout(
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
    let input: CreateCheckoutBody = parse_body(&body)?;
    let checkout = validate_checkout(&gw, &merchant, input, now)?;
    let begin = gw.store.begin_checkout(claim, checkout).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| current(&gw, &merchant, &id, now).await,
        async |checkout| {
            tracing::info!(checkout = %checkout.id, merchant = %merchant.id, "checkout created");
            let state = Stage::of(&checkout, &[], now);
            Ok(Outcome::Done(Answer::json(
                StatusCode::CREATED,
                &checkout.to_api_json(&state, None),
            )))
        },
    )
    .await
    .map(|answer| with_cashier_url(&gw, answer).into_response())
}

/// `GET /v1/checkouts/{id}`.
pub async fn get_checkout(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, now, .. } = signed;
    current(&gw, &merchant, &id, now)
        .await
        .map(IntoResponse::into_response)
}

/// `GET /v1/checkouts/{id}/qr.svg`: the checkout's cashier URL as a QR code, for a till's
/// screen: one code for the order that any wallet app can scan (the cashier then branches on
/// the app, as it does for a link). It is a credential like the URL it holds.
pub async fn get_checkout_qr(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let checkout = gw
        .store
        .checkout(Some(&merchant.id), &id)
        .await?
        .ok_or_else(|| ApiError::missing("checkout", &id))?;
    let svg = crate::cashier::page::qr_svg(&gw.checkout_url(&checkout))
        .ok_or_else(|| ApiError::internal(&"the cashier URL does not fit a QR code"))?;
    // A file of its own: the XML declaration the inline version drops.
    let svg = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{svg}");
    let mut response = (StatusCode::OK, svg).into_response();
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("image/svg+xml"),
    );
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
