//! WeChat Pay's values in Moongate's terms: amounts in fen, Beijing times, transaction and
//! refund states, order numbers and paths. Unknown states never map to success.

use super::*;

pub(crate) fn currency_or_cny(code: &str) -> Result<Currency, AdapterError> {
    if code.is_empty() {
        return Ok(Currency::CNY);
    }
    Currency::parse(code).map_err(|_| AdapterError::Protocol(format!("unknown currency {code}")))
}

pub(crate) fn truncate_bytes(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

pub(crate) fn fen(amount: Money) -> Result<i64, AdapterError> {
    if amount.currency != Currency::CNY {
        return Err(AdapterError::InvalidParameter {
            param: "currency",
            message: format!(
                "WeChat Pay domestic orders are in CNY, not {}",
                amount.currency
            ),
        });
    }
    if amount.minor < 1 {
        return Err(AdapterError::InvalidParameter {
            param: "amount",
            message: "WeChat Pay takes at least 1 fen".to_owned(),
        });
    }
    Ok(amount.minor)
}

/// `out_trade_no` / `out_refund_no`: 6 to 32 of `[0-9A-Za-z_-|*]`.
pub(crate) fn check_order_no(value: &str, what: &str) -> Result<(), AdapterError> {
    let ok = (6..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'));
    if ok {
        Ok(())
    } else {
        Err(AdapterError::InvalidRequest(format!(
            "{what} must be 6-32 letters, digits or _-|*"
        )))
    }
}

/// RFC 3339 in Beijing time, as WeChat Pay writes times (`2018-06-08T10:34:56+08:00`).
pub fn format_rfc3339_beijing(t: OffsetDateTime) -> Result<String, AdapterError> {
    t.to_offset(BEIJING)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .ok_or_else(|| AdapterError::InvalidRequest("time out of range".to_owned()))
}

pub(crate) fn parse_rfc3339(text: Option<&str>) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text?, &Rfc3339).ok()
}

/// v2 `yyyyMMddHHmmss`, Beijing time.
pub fn parse_compact_beijing(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(
        text,
        format_description!("[year][month][day][hour][minute][second]"),
    )
    .ok()
    .map(|t| t.assume_offset(BEIJING))
}

pub(crate) fn transaction_amount(tx: &wire::Transaction) -> Result<Money, AdapterError> {
    let amount = tx
        .amount
        .as_ref()
        .ok_or_else(|| AdapterError::Protocol("amount missing".to_owned()))?;
    let total = amount
        .total
        .ok_or_else(|| AdapterError::Protocol("amount.total missing".to_owned()))?;
    Ok(Money::new(
        total,
        currency_or_cny(amount.currency.as_deref().unwrap_or_default())?,
    ))
}

/// Maps a transaction onto our view. Exhaustive over the documented `trade_state`s; anything
/// else is unrecognised, never paid.
pub(crate) fn transaction_status(tx: &wire::Transaction) -> Result<PaymentStatus, AdapterError> {
    Ok(match tx.trade_state.as_str() {
        // REFUND: it was paid, and (some of) it went back; refunds are tracked on their own.
        "SUCCESS" | "REFUND" => PaymentStatus::Succeeded {
            provider_ref: tx
                .transaction_id
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| AdapterError::Protocol("transaction_id missing".to_owned()))?,
            amount: transaction_amount(tx)?,
            paid_at: parse_rfc3339(tx.success_time.as_deref()),
        },
        "NOTPAY" | "USERPAYING" | "ACCEPT" => PaymentStatus::AwaitingPayment { next_action: None },
        // REVOKED: a payment-code order cancelled before money moved.
        "CLOSED" | "REVOKED" => PaymentStatus::Closed,
        "PAYERROR" => PaymentStatus::Failed {
            code: "PAYERROR".to_owned(),
            message: tx.trade_state_desc.clone().unwrap_or_default(),
        },
        other => PaymentStatus::Unrecognized(other.to_owned()),
    })
}

/// Decodes a refund answer and checks it is about the refund asked for.
pub(crate) fn read_refund(body: &[u8], req: &RefundRequest) -> Result<wire::Refund, AdapterError> {
    let refund: wire::Refund = WechatPayAdapter::decode(body)?;
    if refund.out_refund_no != req.provider_refund_id {
        return Err(AdapterError::Protocol(
            "out_refund_no echo mismatch".to_owned(),
        ));
    }
    Ok(refund)
}

/// Maps a refund state. `ABNORMAL` (the money could not reach the payer and waits for the
/// merchant to act in WeChat's console) stays in progress: the amount stays held, so it can
/// never be refunded a second time through Moongate.
pub(crate) fn refund_status(
    status: &str,
    refund_id: Option<&str>,
) -> Result<RefundStatus, AdapterError> {
    Ok(match status {
        "SUCCESS" => RefundStatus::Succeeded {
            provider_ref: refund_id.map(str::to_owned),
        },
        "PROCESSING" | "ABNORMAL" => RefundStatus::Processing,
        "CLOSED" => RefundStatus::Failed {
            code: "CLOSED".to_owned(),
            message: "refund closed".to_owned(),
        },
        other => {
            return Err(AdapterError::Indeterminate {
                code: other.to_owned(),
                message: "unknown refund status".to_owned(),
            });
        }
    })
}

/// The codes WeChat Pay answers for an order number it does not know.
pub(crate) fn order_missing(code: &str) -> bool {
    matches!(
        code,
        "ORDER_NOT_EXIST" | "ORDERNOTEXIST" | "RESOURCE_NOT_EXISTS"
    )
}

/// Where an order of `method` is placed: `/v3/pay/transactions/…` for a direct merchant,
/// `/v3/pay/partner/transactions/…` for a sub-merchant.
pub(crate) fn order_path(method: PaymentMethod, partner: bool) -> Option<&'static str> {
    Some(match (method, partner) {
        (PaymentMethod::WechatNative, false) => "/v3/pay/transactions/native",
        (PaymentMethod::WechatJsapi, false) => "/v3/pay/transactions/jsapi",
        (PaymentMethod::WechatH5, false) => "/v3/pay/transactions/h5",
        (PaymentMethod::WechatNative, true) => "/v3/pay/partner/transactions/native",
        (PaymentMethod::WechatJsapi, true) => "/v3/pay/partner/transactions/jsapi",
        (PaymentMethod::WechatH5, true) => "/v3/pay/partner/transactions/h5",
        _ => return None,
    })
}

pub(crate) fn encode_path_segment(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}
