//! `/v1/payments`: create, read, list, cancel.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode, ErrorType};
use crate::gateway::Gateway;
use crate::http::extract::Signed;
use crate::http::{
    Shared, json_response, no_parameters, parse_body, serde_urlencoded_strict, to_bytes,
};
use crate::ledger::{Payment, PaymentStatus};
use crate::registry;
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome};
use crate::service::payments::{CreatePaymentBody, merchant_payment, validate_api_create};
use crate::store::{KeyAnswer, answer_body};

pub(crate) async fn create_payment(
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
    let merchant = &*merchant;
    let input: CreatePaymentBody = parse_body(&body)?;
    let (payment, fallbacks) = validate_api_create(merchant, input, now)?;
    let account = merchant
        .account(&payment.account_id)
        .ok_or_else(|| ApiError::internal(&"account vanished"))?;
    // Render (and sign) the provider request before anything is stored: a request the
    // provider could never accept is a 400 that leaves no trace in the ledger.
    let prepared = gw.prepare_create(&payment, &merchant.id, account);
    if let Err(error) = &prepared
        && let Some(refusal) = ApiError::unsendable(error, "")
    {
        return Err(refusal);
    }
    let begin = gw.store.begin_payment(claim, payment).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| current_payment(&gw, merchant, &id).await,
        async |payment| {
            // The outcome and this answer commit together.
            let answer = KeyAnswer {
                merchant_id: merchant.id.clone(),
                key: key.clone(),
                status: StatusCode::CREATED.as_u16(),
            };
            let payment = gw
                .drive_create_with_failover(payment, prepared, &fallbacks, Some(answer))
                .await?;
            if registry::is_payment_code(payment.method)
                && matches!(
                    payment.status,
                    PaymentStatus::Pending | PaymentStatus::Unknown
                )
            {
                tokio::spawn(Arc::clone(&gw).follow_payment_code(payment.id.clone()));
            }
            Ok(Outcome::Stored(Answer {
                status: StatusCode::CREATED,
                body: answer_body(&payment),
                replayed: false,
            }))
        },
    )
    .await
    .map(IntoResponse::into_response)
}

/// A payment's current state, as the answer to a retry whose first request was abandoned.
pub(crate) async fn current_payment(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<Answer, ApiError> {
    let payment = merchant_payment(gw, merchant, id).await?;
    Ok(Answer {
        status: StatusCode::OK,
        body: to_bytes(&payment.to_api_json()),
        replayed: true,
    })
}

pub(crate) async fn get_payment(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let merchant = &*merchant;
    let payment = merchant_payment(&gw, merchant, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&payment.to_api_json()),
        false,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    starting_after: Option<String>,
}

pub(crate) async fn list_payments(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, uri, .. } = signed;
    let merchant = &*merchant;
    let query: ListQuery = serde_urlencoded_strict(uri.query().unwrap_or(""))?;
    let limit = crate::http::page_limit(query.limit)?;
    if let Some(cursor) = &query.starting_after
        && gw
            .store
            .payment(Some(&merchant.id), cursor)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "starting_after",
            "no such payment",
        ));
    }
    let (payments, has_more) = gw
        .store
        .list_payments(&merchant.id, query.starting_after.as_deref(), limit)
        .await?;
    let data: Vec<serde_json::Value> = payments.iter().map(Payment::to_api_json).collect();
    let next_cursor = if has_more {
        payments.last().map(|p| p.id.clone())
    } else {
        None
    };
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": next_cursor,
    });
    Ok(json_response(StatusCode::OK, to_bytes(&body), false))
}

pub(crate) async fn cancel_payment(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed { merchant, body, .. } = signed;
    let merchant = &*merchant;
    no_parameters(&body)?;
    let payment = merchant_payment(&gw, merchant, &id).await?;
    let begin = gw.store.claim_key(claim, &payment.id).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| current_payment(&gw, merchant, &id).await,
        async |()| {
            let refused = match payment.status {
                PaymentStatus::Canceled => None,
                PaymentStatus::Succeeded | PaymentStatus::Failed => Some(ApiError::invalid(
                    ErrorCode::PaymentNotCancelable,
                    "id",
                    format!("a {} payment cannot be canceled", payment.status.as_str()),
                )),
                PaymentStatus::Pending | PaymentStatus::RequiresAction | PaymentStatus::Unknown
                    if !gw.supports(&payment, moongate_contract::Operation::Close) =>
                {
                    // Nothing can stop the order at the provider: it stays payable until it
                    // expires, so canceling it here would only hide a payment to come.
                    Some(ApiError::invalid(
                        ErrorCode::PaymentNotCancelable,
                        "id",
                        "this provider has no way to close an order; it stops being payable at expires_at",
                    ))
                }
                PaymentStatus::Pending | PaymentStatus::RequiresAction | PaymentStatus::Unknown => {
                    return Ok(match gw.cancel(payment).await? {
                        Some(p) if p.status == PaymentStatus::Canceled => {
                            Outcome::Done(Answer::json(StatusCode::OK, &p.to_api_json()))
                        }
                        Some(p) => Outcome::Refused(ApiError::invalid(
                            ErrorCode::PaymentNotCancelable,
                            "id",
                            format!("the provider reports the payment as {}", p.status.as_str()),
                        )),
                        None => Outcome::Refused(ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            ErrorType::ProviderError,
                            ErrorCode::ProviderUnavailable,
                            "the provider did not confirm the cancellation; retry with a new Idempotency-Key",
                        )),
                    });
                }
            };
            Ok(match refused {
                Some(error) => Outcome::Refused(error),
                None => Outcome::Done(Answer::json(StatusCode::OK, &payment.to_api_json())),
            })
        },
    )
    .await
    .map(IntoResponse::into_response)
}
