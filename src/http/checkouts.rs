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
