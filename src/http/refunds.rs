//! `/v1/payments/{id}/refunds` and `/v1/refunds/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{ApiError, ErrorCode};
use crate::http::extract::Signed;
use crate::http::{Shared, json_response, parse_body, to_bytes};
use crate::ledger::{Refund, RefundStatus, new_id};
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome};
use crate::service::payments::merchant_payment;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRefundBody {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

pub(crate) async fn create_refund(
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
    let merchant = &*merchant;
    let input: CreateRefundBody = if body.is_empty() {
        CreateRefundBody {
            amount: None,
            reason: None,
        }
    } else {
        parse_body(&body)?
    };
    let payment = merchant_payment(&gw, merchant, &id).await?;
    let amount = match input.amount {
        Some(amount) => amount,
        None => {
            // All that is left: what no refund holds, pending ones included.
            let left = payment.amount - gw.store.refunds_held(&payment.id).await?;
            if left <= 0 {
                return Err(ApiError::invalid(
                    ErrorCode::RefundExceedsPayment,
                    "amount",
                    "refunds (pending and succeeded) already hold the whole payment: nothing is left to refund",
                ));
            }
            left
        }
    };
    if amount <= 0 {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "amount",
            "amount must be a positive integer in minor units",
        ));
    }
    if let Some(reason) = &input.reason
        && (reason.chars().count() > 256 || reason.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "reason",
            "at most 256 characters, no control characters",
        ));
    }
    let refund = Refund {
        id: new_id("re"),
        payment_id: payment.id.clone(),
        merchant_id: merchant.id.clone(),
        amount,
        currency: payment.currency,
        reason: input.reason,
        status: RefundStatus::Pending,
        failure: None,
        created_at: now,
        updated_at: now,
    };
    let Some(bound) = gw.account_of(&payment) else {
        return Err(ApiError::internal(&"payment account missing from config"));
    };
    if !gw.supports(&payment, moongate_contract::Operation::Refund) {
        return Err(ApiError::invalid(
            ErrorCode::PaymentNotRefundable,
            "id",
            "this payment's provider account does not take refunds through Moongate",
        ));
    }
    let prepared = gw.prepare_refund(&refund, &payment, bound.account());
    if let Err(error) = &prepared
        && let Some(refusal) = ApiError::unsendable(error, "amount")
    {
        return Err(refusal);
    }
    let begin = gw.store.begin_refund(claim, refund).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| {
            let refund = gw
                .store
                .refund(Some(&merchant.id), &id)
                .await?
                .ok_or_else(|| ApiError::missing("refund", &id))?;
            Ok(Answer {
                status: StatusCode::OK,
                body: to_bytes(&refund.to_api_json()),
                replayed: true,
            })
        },
        async |refund| {
            let refund = gw.drive_refund(refund, &payment, prepared).await?;
            Ok(Outcome::Done(Answer::json(
                StatusCode::CREATED,
                &refund.to_api_json(),
            )))
        },
    )
    .await
    .map(IntoResponse::into_response)
}

pub(crate) async fn get_refund(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let merchant = &*merchant;
    let refund = gw
        .store
        .refund(Some(&merchant.id), &id)
        .await?
        .ok_or_else(|| ApiError::missing("refund", &id))?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&refund.to_api_json()),
        false,
    ))
}
