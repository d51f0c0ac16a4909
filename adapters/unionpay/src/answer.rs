//! Reading UnionPay's synchronous answers: raw fields, trusted only once their inline
//! certificate and signature check out ([`crate::trust`]), then read for what the call did.

use moongate_contract::statement::StatementLimits;
use moongate_contract::{
    AdapterError, Currency, NextAction, PaymentStatus, RefundStatus, StatementLocation,
};

use crate::mapping::{CallOutcome, call_outcome, query_status};
use crate::raw::{self, field};
use crate::trust::Trust;

/// The fields of an answer body, once its inline certificate and signature check out.
fn trusted<'a>(
    body: &'a str,
    trust: &Trust,
    unix: i64,
) -> Result<Vec<(&'a str, &'a str)>, AdapterError> {
    let fields = raw::parse(body).map_err(|e| AdapterError::Protocol(e.to_string()))?;
    trust
        .verify(&fields, unix)
        .map_err(|e| AdapterError::Protocol(e.to_string()))?;
    Ok(fields)
}

/// The verified fields of an answer body, checked to be about `order_id`.
fn verified<'a>(
    body: &'a str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<Vec<(&'a str, &'a str)>, AdapterError> {
    let fields = trusted(body, trust, unix)?;
    match field(&fields, "orderId") {
        Some(id) if id == order_id => Ok(fields),
        // A refusal of a malformed request may not echo the order.
        None if field(&fields, "respCode") != Some("00") => Ok(fields),
        _ => Err(AdapterError::Protocol(
            "the answer is about another order".to_owned(),
        )),
    }
}

/// The verified fields of the answer to a call that makes a transaction (a consume, a
/// refund, an undo), when UnionPay accepted it: the notification or a query says the outcome.
/// Refused means nothing happened. `12` (重复交易, duplicate transaction) says a transaction
/// under this `orderId` exists already: a re-sent call whose first try did arrive. That is not
/// a refusal of it, so it is left unknown for a query to settle.
fn accepted<'a>(
    body: &'a str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<Vec<(&'a str, &'a str)>, AdapterError> {
    let fields = verified(body, trust, unix, order_id)?;
    match call_outcome(&fields)? {
        CallOutcome::Accepted => Ok(fields),
        CallOutcome::Refused { code, message } if code == "12" => {
            Err(AdapterError::Indeterminate { code, message })
        }
        CallOutcome::Refused { code, message } => Err(AdapterError::Rejected { code, message }),
    }
}

/// A QR apply's answer: the code to show, or why it was refused.
pub fn qr_apply(
    body: &str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<PaymentStatus, AdapterError> {
    let fields = accepted(body, trust, unix, order_id)?;
    let qr_data = field(&fields, "qrCode")
        .filter(|code| !code.is_empty())
        .ok_or_else(|| AdapterError::Protocol("accepted, but no qrCode".to_owned()))?;
    Ok(PaymentStatus::AwaitingPayment {
        next_action: Some(NextAction::DisplayQr {
            qr_data: qr_data.to_owned(),
        }),
    })
}

/// The answer to a consume with the shopper's payment code: accepted means the shopper may
/// still have to confirm in the app.
pub fn code_consume(
    body: &str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<PaymentStatus, AdapterError> {
    accepted(body, trust, unix, order_id)?;
    Ok(PaymentStatus::AwaitingPayment {
        next_action: Some(NextAction::AwaitShopperConfirmation),
    })
}

/// A query's answer: the payment's status.
pub fn query(
    body: &str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
    currency: Currency,
) -> Result<PaymentStatus, AdapterError> {
    let fields = verified(body, trust, unix, order_id)?;
    query_status(&fields, currency)
}

/// A refund's or undo's answer: accepted means in progress.
pub fn reverse(
    body: &str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<RefundStatus, AdapterError> {
    accepted(body, trust, unix, order_id)?;
    Ok(RefundStatus::Processing)
}

/// A refund query's answer (the refund's own `orderId` and `txnTime`).
pub fn refund_query(
    body: &str,
    trust: &Trust,
    unix: i64,
    order_id: &str,
) -> Result<RefundStatus, AdapterError> {
    let fields = verified(body, trust, unix, order_id)?;
    Ok(match query_status(&fields, Currency::CNY)? {
        PaymentStatus::Succeeded { provider_ref, .. } => RefundStatus::Succeeded {
            provider_ref: Some(provider_ref),
        },
        PaymentStatus::AwaitingPayment { .. } => RefundStatus::Processing,
        PaymentStatus::NotFound => RefundStatus::NotFound,
        PaymentStatus::Failed { code, message } => RefundStatus::Failed { code, message },
        PaymentStatus::Closed | PaymentStatus::Unrecognized(_) => {
            return Err(AdapterError::Protocol(
                "refund query: no verdict".to_owned(),
            ));
        }
    })
}

/// A file transfer's answer: the bill zip out of `fileContent` (`00`), or not ready (`98`,
/// 文件不存在, the official demo's reading); any other code refused the request.
pub fn file_transfer(
    body: &str,
    trust: &Trust,
    unix: i64,
) -> Result<StatementLocation, AdapterError> {
    let fields = trusted(body, trust, unix)?;
    match field(&fields, "respCode") {
        Some("00") => {
            let content = field(&fields, "fileContent")
                .filter(|c| !c.is_empty())
                .ok_or_else(|| AdapterError::Protocol("no fileContent".to_owned()))?;
            let bytes = crate::bill::file_content_zip(content, &StatementLimits::DEFAULT)
                .map_err(|e| AdapterError::Protocol(e.message))?;
            Ok(StatementLocation::Inline { bytes })
        }
        Some("98") => Ok(StatementLocation::NotReady {
            code: "98".to_owned(),
        }),
        code => Err(AdapterError::Rejected {
            code: code.unwrap_or_default().to_owned(),
            message: field(&fields, "respMsg").unwrap_or_default().to_owned(),
        }),
    }
}
