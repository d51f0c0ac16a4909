//! UnionPay values in Moongate's terms: order ids, `txnTime`, and what an answer's response
//! codes mean (`../shared/reference/more-wallets.md` §1.5, from UnionPay's own demo code).
//!
//! - A server call (`backTransReq`) answered `00` was **accepted**, which is not paid: the
//!   notification or a query says the outcome. `03`, `04`, `05` leave it unknown; anything
//!   else refused it.
//! - A query answered `00` carries the order's own outcome in `origRespCode`: `00` paid;
//!   `A6` ("有缺陷的成功", success with a defect) paid too (a single SDK's comment; the
//!   published code list is not at hand to confirm it); `03`/`04`/`05` still in progress;
//!   anything else failed. A query answered `34` found no order, which is not a failure: a
//!   query can overtake its order. Other query answers (`10`, `11`, …) mean the query itself
//!   was refused.

use moongate_contract::{AdapterError, Currency, Money, PaymentStatus};
use time::OffsetDateTime;
use time::macros::{format_description, offset};

use crate::raw::field;

/// UnionPay order ids are 8–40 letters and digits. Moongate's ids are a letter prefix, `_`
/// and 24 letters and digits of fixed length, so dropping the `_` keeps them unique and the
/// same on every re-send (`pay_01J…` becomes `pay01J…`).
pub fn order_id(moongate_id: &str) -> Result<String, AdapterError> {
    let id: String = moongate_id.chars().filter(|c| *c != '_').collect();
    if (8..=40).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(AdapterError::InvalidRequest(format!(
            "{moongate_id} does not make a UnionPay order id (8-40 letters and digits)"
        )))
    }
}

/// The Moongate id an order id came from: the `_` goes back before the fixed-length body.
/// `None` for an order id Moongate cannot have made.
pub fn moongate_id(order_id: &str) -> Option<String> {
    let cut = order_id.len().checked_sub(MOONGATE_ID_BODY)?;
    let (prefix, body) = (order_id.get(..cut)?, order_id.get(cut..)?);
    let valid = !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && body.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| format!("{prefix}_{body}"))
}

/// Letters and digits after the `_` of a Moongate id.
const MOONGATE_ID_BODY: usize = 24;

/// `payTimeout`: when the order stops being payable, in Beijing time, `yyyyMMddHHmmss`.
pub fn pay_timeout(expires_at: OffsetDateTime) -> Result<String, AdapterError> {
    txn_time(expires_at)
}

/// `txnTime`: the request's time in Beijing, `yyyyMMddHHmmss`.
pub fn txn_time(now: OffsetDateTime) -> Result<String, AdapterError> {
    now.to_offset(offset!(+8))
        .format(format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .map_err(|_| AdapterError::InvalidRequest("txnTime out of range".to_owned()))
}

/// What a server call's answer says happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// `00`: accepted; the outcome comes by notification or query.
    Accepted,
    /// Refused before acting.
    Refused {
        /// `respCode`.
        code: String,
        /// `respMsg`.
        message: String,
    },
}

fn code_and_message<'a>(
    fields: &[(&'a str, &'a str)],
    code: &str,
    message: &str,
) -> (String, String) {
    (
        field(fields, code).unwrap_or_default().to_owned(),
        field(fields, message).unwrap_or_default().to_owned(),
    )
}

/// The outcome of a server call (`backTransReq`) from its verified answer.
pub fn call_outcome(fields: &[(&str, &str)]) -> Result<CallOutcome, AdapterError> {
    let (code, message) = code_and_message(fields, "respCode", "respMsg");
    match code.as_str() {
        "00" => Ok(CallOutcome::Accepted),
        "03" | "04" | "05" => Err(AdapterError::Indeterminate { code, message }),
        "" => Err(AdapterError::Protocol("answer without respCode".to_owned())),
        _ => Ok(CallOutcome::Refused { code, message }),
    }
}

/// A payment's status from a verified query answer (`queryTrans`).
pub fn query_status(
    fields: &[(&str, &str)],
    currency: Currency,
) -> Result<PaymentStatus, AdapterError> {
    let (code, message) = code_and_message(fields, "respCode", "respMsg");
    match code.as_str() {
        "00" => {}
        "34" => return Ok(PaymentStatus::NotFound),
        "" => return Err(AdapterError::Protocol("answer without respCode".to_owned())),
        _ => return Err(AdapterError::Rejected { code, message }),
    }
    let (code, message) = code_and_message(fields, "origRespCode", "origRespMsg");
    match code.as_str() {
        "00" | "A6" => {
            let provider_ref = field(fields, "queryId")
                .filter(|id| !id.is_empty())
                .ok_or_else(|| AdapterError::Protocol("paid, but no queryId".to_owned()))?;
            let amount: i64 = field(fields, "txnAmt")
                .and_then(|a| a.parse().ok())
                .filter(|a| *a > 0)
                .ok_or_else(|| AdapterError::Protocol("paid, but no txnAmt".to_owned()))?;
            Ok(PaymentStatus::Succeeded {
                provider_ref: provider_ref.to_owned(),
                amount: Money::new(amount, currency),
                paid_at: None,
            })
        }
        "03" | "04" | "05" => Ok(PaymentStatus::AwaitingPayment { next_action: None }),
        "" => Err(AdapterError::Protocol(
            "query answered 00 without origRespCode".to_owned(),
        )),
        _ => Ok(PaymentStatus::Failed { code, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moongate_ids_become_stable_unionpay_order_ids() {
        assert_eq!(
            order_id("pay_01KBEXAMPLE0000000000000").ok().as_deref(),
            Some("pay01KBEXAMPLE0000000000000")
        );
        assert!(order_id("re_01KBEXAMPLE0000000000000").is_ok());
        assert!(order_id("pay_1").is_err());
        assert!(order_id("pay_01KB-EXAMPLE").is_err());
        assert!(order_id(&format!("pay_{}", "A".repeat(40))).is_err());
        // And back, for notifications.
        assert_eq!(
            moongate_id("pay01KBEXAMPLE0000000000000").as_deref(),
            Some("pay_01KBEXAMPLE0000000000000")
        );
        assert_eq!(moongate_id("01KBEXAMPLE0000000000000"), None);
        assert_eq!(moongate_id("PAY01KBEXAMPLE0000000000000"), None);
        assert_eq!(moongate_id("short"), None);
    }

    #[test]
    fn full_same_day_refunds_are_undone_and_others_refunded() {
        use crate::request::{Reversal, clearing_day, reversal};
        use time::macros::datetime;
        let paid = Money::new(8888, Currency::CNY);
        let at = datetime!(2026-12-01 10:00 +08:00);
        assert_eq!(
            reversal(paid, paid, at, at + time::Duration::hours(12)),
            Reversal::Undo
        );
        // Partial, or after the 23:00 cut-off, or the next day: a refund.
        let part = Money::new(100, Currency::CNY);
        assert_eq!(reversal(paid, part, at, at), Reversal::Refund);
        assert_eq!(
            reversal(paid, paid, at, datetime!(2026-12-01 23:00 +08:00)),
            Reversal::Refund
        );
        assert_eq!(
            reversal(paid, paid, at, datetime!(2026-12-02 09:00 +08:00)),
            Reversal::Refund
        );
        // Paid after the cut-off counts for the next clearing day.
        assert_eq!(
            clearing_day(datetime!(2026-12-01 23:30 +08:00)),
            time::macros::date!(2026 - 12 - 02)
        );
        assert_eq!(
            clearing_day(datetime!(2026-12-01 14:59 UTC)),
            time::macros::date!(2026 - 12 - 01)
        );
    }

    #[test]
    fn txn_time_is_beijing_time() {
        let now = time::macros::datetime!(2022-09-03 06:54:48 +08:00);
        assert_eq!(txn_time(now).ok().as_deref(), Some("20220903065448"));
        let utc = time::macros::datetime!(2022-09-02 22:54:48 UTC);
        assert_eq!(txn_time(utc).ok().as_deref(), Some("20220903065448"));
    }

    #[test]
    fn call_answers() {
        assert_eq!(
            call_outcome(&[("respCode", "00"), ("respMsg", "成功")]).ok(),
            Some(CallOutcome::Accepted)
        );
        for unknown in ["03", "04", "05"] {
            assert!(matches!(
                call_outcome(&[("respCode", unknown)]),
                Err(AdapterError::Indeterminate { .. })
            ));
        }
        assert_eq!(
            call_outcome(&[("respCode", "12"), ("respMsg", "重复交易")]).ok(),
            Some(CallOutcome::Refused {
                code: "12".into(),
                message: "重复交易".into()
            })
        );
        assert!(matches!(call_outcome(&[]), Err(AdapterError::Protocol(_))));
    }

    #[test]
    fn query_answers() {
        let paid = |orig: &str| {
            query_status(
                &[
                    ("respCode", "00"),
                    ("origRespCode", orig),
                    ("queryId", "782209081322060674028"),
                    ("txnAmt", "1"),
                ],
                Currency::CNY,
            )
        };
        for success in ["00", "A6"] {
            assert!(matches!(
                paid(success),
                Ok(PaymentStatus::Succeeded { amount, .. }) if amount == Money::new(1, Currency::CNY)
            ));
        }
        for waiting in ["03", "04", "05"] {
            assert_eq!(
                paid(waiting).ok(),
                Some(PaymentStatus::AwaitingPayment { next_action: None })
            );
        }
        assert!(matches!(paid("01"), Ok(PaymentStatus::Failed { code, .. }) if code == "01"));
        // Not found is not a failure: the query may have overtaken the order.
        assert_eq!(
            query_status(&[("respCode", "34")], Currency::CNY).ok(),
            Some(PaymentStatus::NotFound)
        );
        assert!(matches!(
            query_status(&[("respCode", "10")], Currency::CNY),
            Err(AdapterError::Rejected { .. })
        ));
        // Paid without the transaction's id or amount is not believed.
        assert!(matches!(
            query_status(&[("respCode", "00"), ("origRespCode", "00")], Currency::CNY),
            Err(AdapterError::Protocol(_))
        ));
    }
}
