//! Notifications UnionPay posts to `backUrl`: an ordinary form (so, unlike the synchronous
//! answers, URL-decoded), signed like an answer, with the signing certificate inline. It is
//! answered with HTTP 200; UnionPay sends it again otherwise.

use moongate_contract::{NotificationError, PaymentStatus};

use crate::trust::Trust;

/// What a verified notification says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// `txnType`: `01` consume, `04` refund, `31` consume undo.
    pub txn_type: String,
    /// `respCode` (`00`: the transaction succeeded).
    pub resp_code: String,
    /// `respMsg`.
    pub resp_msg: String,
    /// The transaction's own `orderId`.
    pub order_id: String,
    /// UnionPay's `queryId` of the transaction (the same on every retry of this notification).
    pub query_id: String,
    /// For a refund or undo, the `queryId` of the consume it reverses.
    pub orig_qry_id: Option<String>,
    /// `txnAmt` in fen.
    pub txn_amt: i64,
    /// `settleDate` (MMDD), UnionPay's clearing day, when given.
    pub settle_date: Option<String>,
    /// `reqReserved`, echoed from the request (a refund's payment order id).
    pub req_reserved: Option<String>,
}

/// Decodes and verifies a notification body at `unix` seconds.
pub fn parse(body: &[u8], trust: &Trust, unix: i64) -> Result<Notice, NotificationError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (key, value) in form_urlencoded::parse(body) {
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(NotificationError::Malformed(format!("{key} appears twice")));
        }
        fields.push((key.into_owned(), value.into_owned()));
    }
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    trust
        .verify(&pairs, unix)
        .map_err(|_| NotificationError::BadSignature)?;
    let get = |key: &str| crate::raw::field(&pairs, key).filter(|v| !v.is_empty());
    let required = |key: &str| {
        get(key)
            .map(str::to_owned)
            .ok_or_else(|| NotificationError::Malformed(format!("no {key}")))
    };
    let txn_amt = get("txnAmt")
        .and_then(|a| a.parse::<i64>().ok())
        .filter(|a| *a > 0)
        .ok_or_else(|| NotificationError::Malformed("no valid txnAmt".to_owned()))?;
    Ok(Notice {
        txn_type: required("txnType")?,
        resp_code: required("respCode")?,
        resp_msg: get("respMsg").unwrap_or_default().to_owned(),
        order_id: required("orderId")?,
        query_id: required("queryId")?,
        orig_qry_id: get("origQryId").map(str::to_owned),
        txn_amt,
        settle_date: get("settleDate").map(str::to_owned),
        req_reserved: get("reqReserved").map(str::to_owned),
    })
}

impl Notice {
    /// A consume's outcome: paid when `respCode` is `00`; any other code is not a verdict the
    /// published rules spell out for notifications, so it is left for a query.
    pub fn consume_status(&self, currency: moongate_contract::Currency) -> PaymentStatus {
        if self.resp_code == "00" {
            PaymentStatus::Succeeded {
                provider_ref: self.query_id.clone(),
                amount: moongate_contract::Money::new(self.txn_amt, currency),
                paid_at: None,
            }
        } else {
            PaymentStatus::Unrecognized(format!("notification respCode {}", self.resp_code))
        }
    }
}
