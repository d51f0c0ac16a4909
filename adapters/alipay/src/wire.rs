//! Alipay wire formats: the response envelope and the exact bytes its signature covers.
//!
//! Alipay signs the *raw text* of the response node (`{"alipay_trade_…_response":{…},"sign":"…"}`
//! → the `{…}` after the node name), exactly as received. Re-serialising would break
//! the signature (Alipay escapes `/` as `\/`, for one), so [`top_level_members`]
//! walks the top-level object and returns each member's raw value span.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Deepest nesting the scanner accepts; deeper input is rejected rather than recursed into.
const MAX_DEPTH: usize = 64;

/// Returns `(key, raw value span)` for each member of the top-level JSON object in `body`.
///
/// Fails on anything that is not one well-formed object (trailing bytes included).
pub fn top_level_members(body: &[u8]) -> Result<Vec<(String, Range<usize>)>, &'static str> {
    let mut pos = skip_ws(body, 0);
    if body.get(pos) != Some(&b'{') {
        return Err("response is not a JSON object");
    }
    pos += 1;
    let mut members = Vec::new();
    pos = skip_ws(body, pos);
    if body.get(pos) == Some(&b'}') {
        return finish(body, pos + 1, members);
    }
    loop {
        pos = skip_ws(body, pos);
        let key_start = pos;
        let key_end = skip_string(body, pos)?;
        let key_raw = body.get(key_start..key_end).ok_or("bad key")?;
        let key: String = serde_json::from_slice(key_raw).map_err(|_| "bad key")?;
        pos = skip_ws(body, key_end);
        if body.get(pos) != Some(&b':') {
            return Err("missing ':' after key");
        }
        pos = skip_ws(body, pos + 1);
        let value_start = pos;
        let value_end = skip_value(body, pos)?;
        members.push((key, value_start..value_end));
        pos = skip_ws(body, value_end);
        match body.get(pos) {
            Some(b',') => pos += 1,
            Some(b'}') => return finish(body, pos + 1, members),
            _ => return Err("expected ',' or '}'"),
        }
    }
}

fn finish(
    body: &[u8],
    pos: usize,
    members: Vec<(String, Range<usize>)>,
) -> Result<Vec<(String, Range<usize>)>, &'static str> {
    if skip_ws(body, pos) != body.len() {
        return Err("trailing bytes after the JSON object");
    }
    Ok(members)
}

fn skip_ws(body: &[u8], mut pos: usize) -> usize {
    while matches!(body.get(pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        pos += 1;
    }
    pos
}

/// `pos` is at an opening quote; returns the index just past the closing quote.
fn skip_string(body: &[u8], pos: usize) -> Result<usize, &'static str> {
    if body.get(pos) != Some(&b'"') {
        return Err("expected a string");
    }
    let mut pos = pos + 1;
    loop {
        match body.get(pos) {
            None => return Err("unterminated string"),
            Some(b'\\') => pos += 2,
            Some(b'"') => return Ok(pos + 1),
            Some(_) => pos += 1,
        }
    }
}

/// Returns the index just past the value starting at `pos`. Iterative, depth-bounded.
fn skip_value(body: &[u8], pos: usize) -> Result<usize, &'static str> {
    match body.get(pos) {
        Some(b'"') => skip_string(body, pos),
        Some(b'{' | b'[') => {
            let mut depth = 0_usize;
            let mut pos = pos;
            loop {
                match body.get(pos) {
                    None => return Err("unterminated container"),
                    Some(b'"') => pos = skip_string(body, pos)?,
                    Some(b'{' | b'[') => {
                        depth += 1;
                        if depth > MAX_DEPTH {
                            return Err("JSON nested too deeply");
                        }
                        pos += 1;
                    }
                    Some(b'}' | b']') => {
                        depth -= 1;
                        pos += 1;
                        if depth == 0 {
                            return Ok(pos);
                        }
                    }
                    Some(_) => pos += 1,
                }
            }
        }
        Some(_) => {
            let mut end = pos;
            while let Some(byte) = body.get(end) {
                if matches!(byte, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                    break;
                }
                end += 1;
            }
            if end == pos {
                Err("empty value")
            } else {
                Ok(end)
            }
        }
        None => Err("missing value"),
    }
}

/// A response split into what its signature covers and the members beside it.
#[derive(Debug)]
pub struct SignedResponse<'a> {
    /// The raw bytes of the response node, exactly as received.
    pub node: &'a [u8],
    /// The top-level `sign`.
    pub sign: Option<String>,
    /// The top-level `alipay_cert_sn` (certificate mode): the Alipay certificate that signed.
    pub alipay_cert_sn: Option<String>,
}

/// Splits a response into the node's raw bytes, the `sign` value and `alipay_cert_sn`.
///
/// Looks for `node_name` first, then the gateway-level `error_response` node.
pub fn split_signed_response<'a>(
    body: &'a [u8],
    node_name: &str,
) -> Result<SignedResponse<'a>, &'static str> {
    let members = top_level_members(body)?;
    let span = |name: &str| {
        members
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, s)| s.clone())
    };
    let node = span(node_name)
        .or_else(|| span("error_response"))
        .ok_or("response node missing")?;
    let node = body.get(node).ok_or("response node out of range")?;
    let string = |name: &'static str, problem: &'static str| match span(name) {
        Some(range) => {
            let raw = body.get(range).ok_or(problem)?;
            serde_json::from_slice::<String>(raw)
                .map(Some)
                .map_err(|_| problem)
        }
        None => Ok(None),
    };
    Ok(SignedResponse {
        node,
        sign: string("sign", "sign is not a string")?,
        alipay_cert_sn: string("alipay_cert_sn", "alipay_cert_sn is not a string")?,
    })
}

/// Fields every Alipay response node carries.
#[derive(Debug, Clone, Deserialize)]
pub struct Common {
    /// Gateway code (`10000` success).
    pub code: String,
    /// Gateway message.
    #[serde(default)]
    pub msg: String,
    /// Business code (`ACQ.TRADE_NOT_EXIST`, …).
    #[serde(default)]
    pub sub_code: Option<String>,
    /// Business message.
    #[serde(default)]
    pub sub_msg: Option<String>,
}

/// The common fields as an answer node carries them: `code` is absent on the success of a
/// method that answers without one (`alipay.system.oauth.token`).
#[derive(Debug, Clone, Deserialize)]
pub struct MaybeCommon {
    /// Gateway code; absent on success.
    #[serde(default)]
    pub code: Option<String>,
    /// Gateway message.
    #[serde(default)]
    pub msg: String,
    /// Business code.
    #[serde(default)]
    pub sub_code: Option<String>,
    /// Business message.
    #[serde(default)]
    pub sub_msg: Option<String>,
}

/// `alipay.trade.precreate` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PrecreateResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Echo of the order number.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// The QR code content.
    #[serde(default)]
    pub qr_code: Option<String>,
}

/// `alipay.trade.pay` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PayResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Alipay's trade number.
    #[serde(default)]
    pub trade_no: Option<String>,
    /// Echo of the order number.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// Yuan.
    #[serde(default)]
    pub total_amount: Option<String>,
    /// When it was paid.
    #[serde(default)]
    pub gmt_payment: Option<String>,
}

/// `alipay.trade.query` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct QueryResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Alipay trade number.
    #[serde(default)]
    pub trade_no: Option<String>,
    /// Our order number.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// `WAIT_BUYER_PAY`, `TRADE_CLOSED`, `TRADE_SUCCESS`, `TRADE_FINISHED`.
    #[serde(default)]
    pub trade_status: Option<String>,
    /// Order total in yuan.
    #[serde(default)]
    pub total_amount: Option<String>,
    /// Payment time (Beijing).
    #[serde(default)]
    pub send_pay_date: Option<String>,
}

/// `alipay.trade.refund` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct RefundResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Alipay trade number.
    #[serde(default)]
    pub trade_no: Option<String>,
    /// `Y` when money moved in this call.
    #[serde(default)]
    pub fund_change: Option<String>,
    /// Cumulative refunded amount in yuan.
    #[serde(default)]
    pub refund_fee: Option<String>,
}

/// `alipay.trade.fastpay.refund.query` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct RefundQueryResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Alipay trade number.
    #[serde(default)]
    pub trade_no: Option<String>,
    /// The refund request number.
    #[serde(default)]
    pub out_request_no: Option<String>,
    /// Amount of this refund in yuan; absent when no such refund succeeded.
    #[serde(default)]
    pub refund_amount: Option<String>,
    /// `REFUND_SUCCESS`, `REFUND_PROCESSING`, `REFUND_FAIL` (async refunds only).
    #[serde(default)]
    pub refund_status: Option<String>,
}

/// `alipay.trade.close` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct CloseResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
}

/// `biz_content` of `alipay.trade.precreate`, `page.pay` and `wap.pay` (field order is the wire order).
#[derive(Debug, Clone, Serialize)]
pub struct PayBizContent<'a> {
    /// Our order number.
    pub out_trade_no: &'a str,
    /// Yuan, two decimals.
    pub total_amount: String,
    /// Order title.
    pub subject: &'a str,
    /// `FAST_INSTANT_TRADE_PAY` (page) or `QUICK_WAP_WAY` (wap); absent for precreate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_code: Option<&'static str>,
    /// Longer description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<&'a str>,
    /// Relative expiry, e.g. `90m`.
    pub timeout_express: String,
    /// Where a wap shopper goes when quitting the cashier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quit_url: Option<&'a str>,
    /// Seller PID, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_id: Option<&'a str>,
    /// `bar_code` for `alipay.trade.pay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene: Option<&'static str>,
    /// The scanned payment code, for `alipay.trade.pay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_code: Option<&'a str>,
    /// The payer's `2088…` user id (`alipay.trade.create`, apps of the user-id generation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<&'a str>,
    /// The payer's `open_id` under the app (`alipay.trade.create`, apps since the OpenID
    /// change).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_open_id: Option<&'a str>,
}

/// `alipay.trade.create` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateResponse {
    /// Common fields.
    #[serde(flatten)]
    pub common: Common,
    /// Echo of the order number.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// Alipay's trade number, which the in-app page passes to `tradePay`.
    #[serde(default)]
    pub trade_no: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_node_bytes_exactly_as_received() {
        let body = br#"{"alipay_trade_query_response" : {"code":"10000","url":"http:\/\/x"} ,"sign":"abc"}"#;
        let response = split_signed_response(body, "alipay_trade_query_response").unwrap();
        assert_eq!(response.node, br#"{"code":"10000","url":"http:\/\/x"}"#);
        assert_eq!(response.sign.as_deref(), Some("abc"));
        assert_eq!(response.alipay_cert_sn, None);
    }

    #[test]
    fn a_sign_key_inside_the_node_does_not_confuse_extraction() {
        let body = br#"{"x_response":{"sign":"inner","n":{"a":[1,"}"]}},"sign":"outer"}"#;
        let response = split_signed_response(body, "x_response").unwrap();
        assert_eq!(response.node, br#"{"sign":"inner","n":{"a":[1,"}"]}}"#);
        assert_eq!(response.sign.as_deref(), Some("outer"));
    }

    #[test]
    fn falls_back_to_error_response() {
        let body = br#"{"error_response":{"code":"40002","msg":"Invalid Arguments"},"alipay_cert_sn":"c0ffee","sign":""}"#;
        let response = split_signed_response(body, "x_response").unwrap();
        assert_eq!(
            response.node,
            br#"{"code":"40002","msg":"Invalid Arguments"}"#
        );
        assert_eq!(response.sign.as_deref(), Some(""));
        assert_eq!(response.alipay_cert_sn.as_deref(), Some("c0ffee"));
    }

    #[test]
    fn rejects_garbage_truncation_and_deep_nesting() {
        for bad in [
            &b""[..],
            b"<html>502</html>",
            b"{\"a\":",
            b"{\"a\":\"x",
            b"{\"a\":1}trailing",
            b"{\"a\" 1}",
            b"[1]",
        ] {
            assert!(
                top_level_members(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(top_level_members(deep.as_bytes()).is_err());
        assert!(split_signed_response(b"{\"other\":{}}", "x_response").is_err());
    }
}

/// `alipay.data.dataservice.bill.downloadurl.query` answer (A.11).
#[derive(Debug, Clone, Deserialize)]
pub struct BillResponse {
    /// The download link (valid 30 seconds).
    pub bill_download_url: Option<String>,
}
