//! A strict local re-implementation of UnionPay's online gateway (ACP 5.1.0, `signMethod=01`),
//! written from `../shared/reference/more-wallets.md` §1, never with the adapter's code.
//!
//! - Requests (`backTransReq.do`, `queryTrans.do`) are forms. Every field is checked as §1.2
//!   lists it: `version=5.1.0`, `encoding`, `signMethod=01`, `accessType=0`, a registered
//!   `merId` with its `certId`, `orderId` of 8–40 letters and digits, `txnTime` in Beijing time
//!   and fresh, `txnAmt` in fen, `currencyCode=156`, the operation's `txnType/txnSubType/
//!   bizType/channelType`, and the signature: every non-empty field but `signature`, sorted,
//!   joined `k=v&`, SHA-256 as lower-case hex, SHA256withRSA over that hex. A refused request
//!   gets a signed answer with UnionPay's codes (`11` signature, `12` duplicate order, `30`
//!   format, `34` not found).
//! - Answers are raw `k=v&…` text, never URL-encoded, with the signing certificate inline
//!   (`signPubKeyCert`, CRLF line ends) and the signature over both: the answer's `+`, `/`
//!   and line breaks must survive the gateway's parser.
//! - The sandbox signs with its own CA's certificate (`fixtures/unionpay/gen.sh`: root →
//!   middle → a leaf whose CN names 中国银联股份有限公司); the gateway must be configured
//!   with that middle and root to believe anything.
//! - QR apply (`01/07`) answers `qrCode`; a query answers `origRespCode=05` until the shopper
//!   pays (`POST /sandbox/pay`, or the wallet page), then `00` with `queryId`. A consume with a
//!   payment code (`01/06`, `qrNo` of 19 digits from 62) is accepted and settles by itself
//!   shortly after (sandbox choice), or fails with `51` for a code ending in `51`.
//! - File transfer (`POST /`, as `filedownload.95516.com/` takes it; `76/01/000000`,
//!   `fileType=00`, `settleDate=MMDD`) answers the clearing day's bill inline: `fileContent`
//!   is the zip (ZM and ZME files, `statements.rs`) zlib-deflated in base64; `98` while there
//!   is no file.
//! - Notifications are form POSTs to `backUrl`, signed like answers, re-sent until the answer
//!   is HTTP 200 (sandbox choice: 5 tries at 1, 2, 4, 8, 16 s, divided by `time_divisor`).
//!
//! Sandbox choices where UnionPay's behaviour is not published: a `txnTime` more than an hour
//! from the sandbox's Beijing time is refused (`30`); the merchant's certificate is registered
//! by its `certId` and public key, and its validity is not checked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{HttpMethod, HttpRequest};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::macros::{format_description, offset};
use tokio::net::TcpListener;

use super::alipay::SandboxError;
use super::statements::{self, BillDesk, StatementClock};
use super::{
    FaultBody, Faults, WalletScan, control_reply, html_escape, wallet_page, wallet_paid,
    with_faults,
};
use crate::net::HttpClient;
use crate::text::random_alnum;

/// Notification re-sends after the first try, seconds, before division (sandbox choice).
const NOTIFY_SCHEDULE_SECS: [u64; 4] = [2, 4, 8, 16];

/// What the sandbox wallet's page posts for a gateway consume: this and the order id.
const FRONT_CODE: &str = "front:";

/// How long a payment-code consume waits for the shopper before it settles, before division.
const CODE_SETTLE_MS: u64 = 600;

/// One merchant registered at the sandbox.
#[derive(Debug, Clone)]
pub struct UnionPayMerchant {
    /// `merId`.
    pub mer_id: String,
    /// The `certId` its requests must carry: its signing certificate's decimal serial.
    pub cert_id: String,
    /// The public key of that certificate (PEM).
    pub public_key_pem: String,
}

/// How the sandbox is set up.
#[derive(Debug)]
pub struct UnionPaySandboxSettings {
    /// The sandbox's signing key (PEM).
    pub sign_key_pem: String,
    /// Its certificate (PEM), sent inline as `signPubKeyCert`.
    pub sign_cert_pem: String,
    /// Registered merchants.
    pub merchants: Vec<UnionPayMerchant>,
    /// Divides the notification schedule and settling (1 = real timing).
    pub time_divisor: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State_ {
    /// Waiting for the shopper (`origRespCode=05`).
    Waiting,
    Paid,
    Failed,
}

#[derive(Clone, Debug)]
struct Order {
    mer_id: String,
    order_id: String,
    txn_time: String,
    txn_sub_type: String,
    amount: i64,
    back_url: String,
    state: State_,
    query_id: String,
    qr_code: Option<String>,
    /// `01` consume, `04` refund, `31` consume undo.
    txn_type: &'static str,
    /// A refund's or undo's consume.
    orig_qry_id: Option<String>,
    /// Echoed in the notification.
    req_reserved: String,
    /// When the consume was paid.
    paid_at: Option<OffsetDateTime>,
    /// `payTimeout`: after it the order can no longer be paid.
    pay_timeout: Option<OffsetDateTime>,
    /// `bizType`: `000000`, or `000201` for a gateway (browser) consume.
    biz_type: &'static str,
    /// A gateway consume's `frontUrl`, where the browser goes back.
    front_url: Option<String>,
}

/// One notification and its delivery.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SentNotice {
    /// The order.
    pub order_id: String,
    /// Where it went.
    pub url: String,
    /// The form body as sent.
    pub body: String,
    /// Tries made.
    pub attempts: u32,
    /// True once answered HTTP 200.
    pub acknowledged: bool,
}

struct Inner {
    orders: HashMap<(String, String), Order>,
    notices: Vec<SentNotice>,
    fault: Faults,
    calls: u64,
    bills: BillDesk,
}

/// The sandbox's state.
pub struct UnionPaySandbox {
    signer: RsaSigner,
    /// The certificate with CRLF line ends, as UnionPay sends it.
    certificate: String,
    merchants: HashMap<String, (UnionPayMerchant, RsaVerifier)>,
    time_divisor: u32,
    client: HttpClient,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for UnionPaySandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionPaySandbox")
            .field("merchants", &self.merchants.len())
            .finish_non_exhaustive()
    }
}

type Shared = Arc<UnionPaySandbox>;

/// Beijing time as UnionPay writes it.
fn beijing(at: OffsetDateTime) -> String {
    at.to_offset(offset!(+8))
        .format(format_description!(
            "[year][month][day][hour][minute][second]"
        ))
        .unwrap_or_default()
}

fn parse_beijing(text: &str) -> Option<OffsetDateTime> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    time::PrimitiveDateTime::parse(
        text,
        format_description!("[year][month][day][hour][minute][second]"),
    )
    .ok()
    .map(|t| t.assume_offset(offset!(+8)))
}

/// The string UnionPay signs: non-empty fields but `signature`, sorted, `k=v` joined by `&`.
fn sign_string(fields: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = fields
        .iter()
        .filter(|(k, v)| k != "signature" && !v.is_empty())
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn digest_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// The fields of a request or answer, in order.
type Fields = Vec<(String, String)>;

/// One of the gateway's operations: a request's fields to its answer's.
type Operation = fn(&Shared, &[(String, String)]) -> Result<Fields, Refusal>;

/// A refusal: UnionPay's code and message.
struct Refusal(&'static str, String);

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal(code, message.into())
}

impl UnionPaySandbox {
    /// Builds the state.
    pub fn new(settings: UnionPaySandboxSettings) -> Result<UnionPaySandbox, SandboxError> {
        let signer = RsaSigner::from_pem(&settings.sign_key_pem)
            .map_err(|e| SandboxError::Key(e.to_string()))?;
        let mut merchants = HashMap::new();
        for merchant in settings.merchants {
            let verifier = RsaVerifier::from_pem(&merchant.public_key_pem)
                .map_err(|e| SandboxError::Key(e.to_string()))?;
            merchants.insert(merchant.mer_id.clone(), (merchant, verifier));
        }
        let certificate = settings
            .sign_cert_pem
            .trim()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        Ok(UnionPaySandbox {
            signer,
            certificate,
            merchants,
            time_divisor: settings.time_divisor.max(1),
            client: HttpClient::new(Duration::from_secs(2), Duration::from_secs(5))
                .map_err(SandboxError::Io)?,
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                notices: Vec::new(),
                fault: Faults::none(),
                calls: 0,
                bills: BillDesk::default(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs `fields` with the sandbox's certificate inline; `bad` signs other bytes.
    fn sign(&self, mut fields: Vec<(String, String)>, bad: bool) -> Vec<(String, String)> {
        for (k, v) in [
            ("version", "5.1.0"),
            ("encoding", "utf-8"),
            ("signMethod", "01"),
        ] {
            if !fields.iter().any(|(key, _)| key == k) {
                fields.push((k.to_owned(), v.to_owned()));
            }
        }
        fields.push(("signPubKeyCert".to_owned(), self.certificate.clone()));
        let mut message = digest_hex(&sign_string(&fields));
        if bad {
            message.push('x');
        }
        let signature = self
            .signer
            .sign_base64(message.as_bytes())
            .unwrap_or_default();
        fields.push(("signature".to_owned(), signature));
        fields
    }

    /// A raw synchronous answer: `k=v&…` without URL encoding.
    fn raw_answer(&self, fields: Vec<(String, String)>, bad: bool) -> Response {
        let signed = self.sign(fields, bad);
        let body = signed
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")],
            body,
        )
            .into_response()
    }

    /// Checks the fields every request carries, and its signature.
    fn check_signed(&self, fields: &[(String, String)]) -> Result<(), Refusal> {
        if field(fields, "version") != "5.1.0" {
            return Err(refuse("30", "报文格式错误 version"));
        }
        if !field(fields, "encoding").eq_ignore_ascii_case("utf-8") {
            return Err(refuse("30", "报文格式错误 encoding"));
        }
        if field(fields, "signMethod") != "01" {
            return Err(refuse("30", "报文格式错误 signMethod"));
        }
        if field(fields, "accessType") != "0" {
            return Err(refuse("30", "报文格式错误 accessType"));
        }
        let mer_id = field(fields, "merId");
        let Some((merchant, verifier)) = self.merchants.get(mer_id) else {
            return Err(refuse("30", "商户号不存在 merId"));
        };
        if field(fields, "certId") != merchant.cert_id {
            return Err(refuse("11", "验证签名失败 certId"));
        }
        let signature = field(fields, "signature");
        let message = digest_hex(&sign_string(fields));
        if signature.is_empty() || !verifier.verify_base64(message.as_bytes(), signature) {
            return Err(refuse("11", "验证签名失败"));
        }
        Ok(())
    }

    /// Checks a transaction's or query's common fields and signature, and its order.
    fn check_common(&self, fields: &[(String, String)]) -> Result<(), Refusal> {
        self.check_signed(fields)?;
        let order_id = field(fields, "orderId");
        if !(8..=40).contains(&order_id.len())
            || !order_id.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(refuse("30", "报文格式错误 orderId"));
        }
        if parse_beijing(field(fields, "txnTime")).is_none() {
            return Err(refuse("30", "txnTime无效"));
        }
        Ok(())
    }

    /// `backTransReq.do`: QR apply and payment-code consume.
    fn back_trans(
        self: &Arc<Self>,
        fields: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Refusal> {
        self.check_common(fields)?;
        let kind = (
            field(fields, "txnType"),
            field(fields, "txnSubType"),
            field(fields, "bizType"),
            field(fields, "channelType"),
        );
        let sub_type = match kind {
            ("01", "07", "000000", "08") => "07",
            ("01", "06", "000000", "08") => "06",
            ("04" | "31", "00", "000000", "07" | "08") => return self.reverse(fields),
            _ => {
                return Err(refuse(
                    "30",
                    "交易类型错误 txnType/txnSubType/bizType/channelType",
                ));
            }
        };
        let (fen, back_url) = transaction(fields)?;
        let pay_timeout = pay_timeout(fields)?;
        let code = field(fields, "qrNo");
        if sub_type == "06" {
            if code.len() != 19
                || !code.starts_with("62")
                || !code.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(refuse("30", "报文格式错误 qrNo"));
            }
        } else if !code.is_empty() {
            return Err(refuse("30", "报文格式错误 qrNo"));
        }
        let (mer_id, order_id) = (
            field(fields, "merId").to_owned(),
            field(fields, "orderId").to_owned(),
        );
        let qr_code = (sub_type == "07")
            .then(|| format!("https://qr.95516.com/00010000/62{}", random_digits(18)));
        let order = Order {
            mer_id: mer_id.clone(),
            order_id: order_id.clone(),
            txn_time: field(fields, "txnTime").to_owned(),
            txn_sub_type: sub_type.to_owned(),
            amount: fen,
            back_url: back_url.to_owned(),
            state: State_::Waiting,
            query_id: random_digits(21),
            qr_code: qr_code.clone(),
            txn_type: "01",
            orig_qry_id: None,
            req_reserved: field(fields, "reqReserved").to_owned(),
            paid_at: None,
            pay_timeout,
            biz_type: "000000",
            front_url: None,
        };
        self.open_order(order)?;
        if sub_type == "06" {
            let outcome = if code.ends_with("51") {
                State_::Failed
            } else {
                State_::Paid
            };
            self.settle_later(mer_id, order_id, outcome);
        }
        let mut answer = echo(fields);
        answer.push(("respCode".into(), "00".into()));
        answer.push(("respMsg".into(), "成功[0000000]".into()));
        if let Some(qr) = qr_code {
            answer.push(("qrCode".into(), qr));
        }
        Ok(answer)
    }

    /// A refund (`04`, part or all of what is left) or a consume undo (`31`, the whole amount,
    /// on the consume's clearing day only) of the paid consume `origQryId`, under a new
    /// `orderId`; it settles shortly after (sandbox choice) and is notified to `backUrl`.
    fn reverse(self: &Arc<Self>, fields: &[(String, String)]) -> Result<Fields, Refusal> {
        let now = OffsetDateTime::now_utc();
        let (fen, back_url) = transaction(fields)?;
        let txn_type = if field(fields, "txnType") == "31" {
            "31"
        } else {
            "04"
        };
        let mer_id = field(fields, "merId").to_owned();
        let orig = field(fields, "origQryId");
        let order_id = field(fields, "orderId").to_owned();
        let mut inner = self.lock();
        if inner
            .orders
            .contains_key(&(mer_id.clone(), order_id.clone()))
        {
            return Err(refuse("12", "重复交易"));
        }
        let Some(consume) = inner
            .orders
            .values()
            .find(|o| o.mer_id == mer_id && o.txn_type == "01" && o.query_id == orig)
            .cloned()
        else {
            return Err(refuse("35", "原交易不存在"));
        };
        if consume.state != State_::Paid {
            return Err(refuse("36", "原交易状态错误"));
        }
        let reversed: i64 = inner
            .orders
            .values()
            .filter(|o| o.orig_qry_id.as_deref() == Some(orig) && o.state != State_::Failed)
            .map(|o| o.amount)
            .sum();
        if fen > consume.amount - reversed {
            return Err(refuse("30", "退货金额超限"));
        }
        if txn_type == "31"
            && (fen != consume.amount
                || reversed != 0
                || consume.paid_at.map(settle_date) != Some(settle_date(now)))
        {
            return Err(refuse("30", "原交易不允许撤销"));
        }
        let reversal = Order {
            mer_id: mer_id.clone(),
            order_id: order_id.clone(),
            txn_time: field(fields, "txnTime").to_owned(),
            txn_sub_type: "00".to_owned(),
            amount: fen,
            back_url: back_url.to_owned(),
            state: State_::Waiting,
            query_id: random_digits(21),
            qr_code: None,
            txn_type,
            orig_qry_id: Some(orig.to_owned()),
            req_reserved: field(fields, "reqReserved").to_owned(),
            paid_at: None,
            pay_timeout: None,
            biz_type: "000000",
            front_url: None,
        };
        inner
            .orders
            .insert((mer_id.clone(), order_id.clone()), reversal);
        drop(inner);
        self.settle_later(mer_id, order_id, State_::Paid);
        let mut answer = echo(fields);
        answer.push(("respCode".into(), "00".into()));
        answer.push(("respMsg".into(), "成功[0000000]".into()));
        answer.push(("origQryId".into(), orig.to_owned()));
        Ok(answer)
    }

    /// `queryTrans.do`: one order by `orderId` and its own `txnTime`.
    fn query(&self, fields: &[(String, String)]) -> Result<Vec<(String, String)>, Refusal> {
        self.check_common(fields)?;
        match (
            field(fields, "txnType"),
            field(fields, "txnSubType"),
            field(fields, "bizType"),
        ) {
            ("00", "00", "000000" | "000201") => {}
            _ => return Err(refuse("30", "交易类型错误")),
        }
        let key = (
            field(fields, "merId").to_owned(),
            field(fields, "orderId").to_owned(),
        );
        let inner = self.lock();
        let Some(order) = inner
            .orders
            .get(&key)
            .filter(|o| o.txn_time == field(fields, "txnTime"))
        else {
            return Err(refuse("34", "查无此交易"));
        };
        let mut answer = echo(fields);
        answer.push(("respCode".into(), "00".into()));
        answer.push(("respMsg".into(), "成功[0000000]".into()));
        answer.push(("txnAmt".into(), order.amount.to_string()));
        answer.push(("currencyCode".into(), "156".into()));
        let (code, message) = match order.state {
            State_::Waiting => ("05", "交易处理中"),
            State_::Paid => ("00", "成功[0000000]"),
            State_::Failed => ("51", "余额不足"),
        };
        answer.push(("origRespCode".into(), code.into()));
        answer.push(("origRespMsg".into(), message.into()));
        if order.state == State_::Paid {
            answer.push(("queryId".into(), order.query_id.clone()));
            answer.push(("settleDate".into(), settle_date(OffsetDateTime::now_utc())));
        }
        Ok(answer)
    }

    /// File transfer (`76/01/000000`, `fileType=00`): the bill of clearing day `settleDate`
    /// (`MMDD`, the latest such day not after today) in the answer's `fileContent`. A day
    /// that is not over, whose bill is not made yet (before 10:00 the next day, sandbox
    /// choice), or that cleared nothing answers `98` (文件不存在), as the official demo reads
    /// it.
    fn file_transfer(&self, fields: &[(String, String)]) -> Result<Fields, Refusal> {
        self.check_signed(fields)?;
        match (
            field(fields, "txnType"),
            field(fields, "txnSubType"),
            field(fields, "bizType"),
            field(fields, "channelType"),
        ) {
            ("76", "01", "000000", "07" | "08") => {}
            _ => return Err(refuse("30", "交易类型错误")),
        }
        if field(fields, "fileType") != "00" {
            return Err(refuse("30", "报文格式错误 fileType"));
        }
        let sent = parse_beijing(field(fields, "txnTime"));
        if sent.is_none_or(|t| (t - OffsetDateTime::now_utc()).abs() > time::Duration::hours(1)) {
            return Err(refuse("30", "txnTime无效"));
        }
        let now = OffsetDateTime::now_utc();
        let (today, ready) = {
            let inner = self.lock();
            let (today, ready) = inner.bills.today(now);
            // The bill desk keeps Beijing days; UnionPay's turn at 23:00.
            let clearing = if inner.bills.clock_set() {
                today
            } else {
                clearing_day(now)
            };
            (clearing, ready)
        };
        let settle = field(fields, "settleDate");
        let day =
            month_day(settle, today).ok_or_else(|| refuse("30", "报文格式错误 settleDate"))?;
        let not_made = day >= today || (day.next_day() == Some(today) && !ready);
        let mer_id = field(fields, "merId").to_owned();
        let entries = if not_made {
            Vec::new()
        } else {
            self.bill_entries(&mer_id, day)
        };
        if entries.is_empty() {
            return Err(refuse("98", "文件不存在"));
        }
        let zip = statements::unionpay_bill_zip(&mer_id, day, &entries, now)
            .and_then(|zip| statements::unionpay_file_content(&zip))
            .map_err(|_| refuse("03", "系统繁忙"))?;
        let mut answer = echo(fields);
        answer.push(("respCode".into(), "00".into()));
        answer.push(("respMsg".into(), "成功[0000000]".into()));
        answer.push(("fileType".into(), "00".into()));
        answer.push(("settleDate".into(), settle.to_owned()));
        answer.push((
            "fileName".into(),
            format!("{mer_id}_{}.zip", statements::compact_day(day)),
        ));
        answer.push(("fileContent".into(), zip));
        Ok(answer)
    }

    /// What cleared on `day` for `mer_id`: paid consumes and settled refunds and undos.
    fn bill_entries(&self, mer_id: &str, day: time::Date) -> Vec<statements::UnionPayZmEntry> {
        let inner = self.lock();
        let mut entries: Vec<statements::UnionPayZmEntry> = inner
            .orders
            .values()
            .filter(|o| o.mer_id == mer_id && o.state == State_::Paid)
            .filter_map(|o| {
                let at = o.paid_at.filter(|at| clearing_day(*at) == day)?;
                let consume = o.orig_qry_id.as_ref().and_then(|orig| {
                    inner
                        .orders
                        .values()
                        .find(|c| c.mer_id == mer_id && c.txn_type == "01" && c.query_id == *orig)
                });
                Some(statements::UnionPayZmEntry {
                    txn_type: o.txn_type.to_owned(),
                    txn_sub_type: o.txn_sub_type.clone(),
                    at,
                    amount: o.amount,
                    query_id: o.query_id.clone(),
                    order_id: o.order_id.clone(),
                    mer_id: o.mer_id.clone(),
                    orig_qry_id: o.orig_qry_id.clone(),
                    orig_order_id: consume.map(|c| c.order_id.clone()),
                    reserved: o.req_reserved.clone(),
                    fee: statements::unionpay_fee(o.amount),
                })
            })
            .collect();
        entries.sort_by_key(|e| e.at);
        entries
    }

    /// Settles an order by itself after [`CODE_SETTLE_MS`] (divided): a payment-code consume
    /// the shopper confirms, a refund or undo the bank carries out (sandbox choice).
    fn settle_later(self: &Arc<Self>, mer_id: String, order_id: String, outcome: State_) {
        let sandbox = Arc::clone(self);
        let wait = Duration::from_millis(CODE_SETTLE_MS / u64::from(self.time_divisor));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = sandbox.settle(&mer_id, &order_id, outcome, true);
        });
    }

    /// The shopper paid (or the code consume failed): record it and notify `backUrl`.
    fn settle(
        self: &Arc<Self>,
        mer_id: &str,
        order_id: &str,
        outcome: State_,
        notify: bool,
    ) -> Result<Value, (StatusCode, String)> {
        let mut inner = self.lock();
        let order = inner
            .orders
            .get_mut(&(mer_id.to_owned(), order_id.to_owned()))
            .ok_or((StatusCode::NOT_FOUND, format!("no order {order_id}")))?;
        if order.state != State_::Waiting {
            return Err((StatusCode::CONFLICT, format!("order {order_id} is settled")));
        }
        if order
            .pay_timeout
            .is_some_and(|deadline| deadline < OffsetDateTime::now_utc())
        {
            return Err((
                StatusCode::CONFLICT,
                format!("order {order_id} is past its payTimeout"),
            ));
        }
        order.state = outcome;
        if outcome == State_::Paid {
            order.paid_at = Some(OffsetDateTime::now_utc());
        }
        let order = order.clone();
        drop(inner);
        if outcome == State_::Paid && notify {
            self.notify(&order);
        }
        Ok(json!({"order_id": order.order_id, "query_id": order.query_id}))
    }

    fn notify(self: &Arc<Self>, order: &Order) {
        let signed = self.sign(notice_fields(order), false);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&signed)
            .finish();
        let index = {
            let mut inner = self.lock();
            inner.notices.push(SentNotice {
                order_id: order.order_id.clone(),
                url: order.back_url.clone(),
                body: body.clone(),
                attempts: 0,
                acknowledged: false,
            });
            inner.notices.len() - 1
        };
        let sandbox = Arc::clone(self);
        tokio::spawn(async move {
            let waits = std::iter::once(0).chain(NOTIFY_SCHEDULE_SECS);
            for wait in waits {
                let wait = wait * 1000 / u64::from(sandbox.time_divisor);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if sandbox.deliver(index, None).await == 200 {
                    break;
                }
            }
        });
    }

    /// Gateway consume (`frontTransReq.do`, `01/01/000201/07|08`), posted by the shopper's
    /// browser: every field and the signature checked as for the server calls, plus an
    /// http(s) `frontUrl`; the answer is UnionPay's payment page (here the sandbox wallet's),
    /// or an error page naming the code.
    fn front_trans(&self, fields: &[(String, String)]) -> Result<Response, Refusal> {
        self.check_common(fields)?;
        match (
            field(fields, "txnType"),
            field(fields, "txnSubType"),
            field(fields, "bizType"),
            field(fields, "channelType"),
        ) {
            ("01", "01", "000201", "07" | "08") => {}
            _ => {
                return Err(refuse(
                    "30",
                    "交易类型错误 txnType/txnSubType/bizType/channelType",
                ));
            }
        }
        let (fen, back_url) = transaction(fields)?;
        let front_url = field(fields, "frontUrl");
        if !(front_url.starts_with("http://") || front_url.starts_with("https://")) {
            return Err(refuse("30", "报文格式错误 frontUrl"));
        }
        let order_id = field(fields, "orderId").to_owned();
        self.open_order(Order {
            mer_id: field(fields, "merId").to_owned(),
            order_id: order_id.clone(),
            txn_time: field(fields, "txnTime").to_owned(),
            txn_sub_type: "01".to_owned(),
            amount: fen,
            back_url: back_url.to_owned(),
            state: State_::Waiting,
            query_id: random_digits(21),
            qr_code: None,
            txn_type: "01",
            orig_qry_id: None,
            req_reserved: field(fields, "reqReserved").to_owned(),
            paid_at: None,
            pay_timeout: pay_timeout(fields)?,
            biz_type: "000201",
            front_url: Some(front_url.to_owned()),
        })?;
        Ok(wallet_page(
            "银联在线支付 UnionPay",
            &order_id,
            fen,
            &format!("{FRONT_CODE}{order_id}"),
        ))
    }

    /// Files a new consume, refusing an order id the merchant used before (`12`).
    fn open_order(&self, order: Order) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let key = (order.mer_id.clone(), order.order_id.clone());
        if inner.orders.contains_key(&key) {
            return Err(refuse("12", "重复交易"));
        }
        inner.orders.insert(key, order);
        Ok(())
    }

    /// The page that takes a paid gateway consume's browser back to `frontUrl`: a signed POST
    /// of the result (UnionPay's front notification), submitted by itself.
    fn front_return(&self, order: &Order) -> Response {
        let Some(url) = &order.front_url else {
            return wallet_paid(Ok(json!({})));
        };
        let hidden: String = self
            .sign(notice_fields(order), false)
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=hidden name=\"{}\" value=\"{}\">",
                    html_escape(k),
                    html_escape(v)
                )
            })
            .collect();
        axum::response::Html(format!(
            "<!doctype html><meta charset=utf-8><title>Paid</title>\
             <p id=paid>支付成功 · Paid.</p><form id=back method=post action=\"{}\">{hidden}\
             <button type=submit>返回商户 · Back to the shop</button></form>\
             <script>document.getElementById('back').submit();</script>",
            html_escape(url)
        ))
        .into_response()
    }
}

/// The fields of a transaction's notification (to `backUrl`, and to `frontUrl` from the
/// browser), before signing.
fn notice_fields(order: &Order) -> Vec<(String, String)> {
    let now = OffsetDateTime::now_utc();
    let mut fields = vec![
        ("accessType".to_owned(), "0".to_owned()),
        ("bizType".to_owned(), order.biz_type.to_owned()),
        ("currencyCode".to_owned(), "156".to_owned()),
        ("merId".to_owned(), order.mer_id.clone()),
        ("orderId".to_owned(), order.order_id.clone()),
        ("queryId".to_owned(), order.query_id.clone()),
        ("respCode".to_owned(), "00".to_owned()),
        ("respMsg".to_owned(), "成功[0000000]".to_owned()),
        ("settleAmt".to_owned(), order.amount.to_string()),
        ("settleCurrencyCode".to_owned(), "156".to_owned()),
        ("settleDate".to_owned(), settle_date(now)),
        ("traceNo".to_owned(), random_digits(6)),
        (
            "traceTime".to_owned(),
            beijing(now).get(4..).unwrap_or_default().to_owned(),
        ),
        ("txnAmt".to_owned(), order.amount.to_string()),
        ("txnSubType".to_owned(), order.txn_sub_type.clone()),
        ("txnTime".to_owned(), order.txn_time.clone()),
        ("txnType".to_owned(), order.txn_type.to_owned()),
    ];
    if let Some(orig) = &order.orig_qry_id {
        fields.push(("origQryId".to_owned(), orig.clone()));
    }
    if !order.req_reserved.is_empty() {
        fields.push(("reqReserved".to_owned(), order.req_reserved.clone()));
    }
    fields
}

impl UnionPaySandbox {
    /// One delivery of notice `index` (its body, or `forged` instead); the answer's status
    /// (0 when unreachable). A forged body is not recorded as a try.
    async fn deliver(&self, index: usize, forged: Option<String>) -> u16 {
        let Some((url, body)) = self
            .lock()
            .notices
            .get(index)
            .map(|n| (n.url.clone(), n.body.clone()))
        else {
            return 0;
        };
        let is_forged = forged.is_some();
        let request = HttpRequest {
            method: HttpMethod::Post,
            url,
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded;charset=UTF-8".into(),
            )],
            body: forged.unwrap_or(body).into_bytes(),
        };
        let status = match self.client.send(&request).await {
            Ok(answer) => answer.status,
            Err(_) => 0,
        };
        if !is_forged {
            let mut inner = self.lock();
            if let Some(notice) = inner.notices.get_mut(index) {
                notice.attempts += 1;
                notice.acknowledged |= status == 200;
            }
        }
        status
    }

    /// The latest notice of an order (Moongate's id or UnionPay's order id).
    fn latest(&self, order: &str) -> Option<usize> {
        let order = unionpay_order(order);
        self.lock()
            .notices
            .iter()
            .rposition(|n| n.order_id == order)
    }

    /// The notifications sent so far.
    pub fn notices(&self) -> Vec<SentNotice> {
        self.lock().notices.clone()
    }
}

/// The fields every transaction request carries, checked: a `txnTime` within an hour of the
/// sandbox's clock (sandbox choice), `txnAmt` in fen (digits only, no leading zero, not 0),
/// `currencyCode=156` and an http(s) `backUrl`. Returns the amount and the `backUrl`.
fn transaction(fields: &[(String, String)]) -> Result<(i64, &str), Refusal> {
    let sent = parse_beijing(field(fields, "txnTime")).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    if (sent - OffsetDateTime::now_utc()).abs() > time::Duration::hours(1) {
        return Err(refuse("30", "txnTime无效"));
    }
    let amount = field(fields, "txnAmt");
    let fen: i64 = match amount.parse() {
        Ok(f)
            if f > 0 && !amount.starts_with('0') && amount.bytes().all(|b| b.is_ascii_digit()) =>
        {
            f
        }
        _ => return Err(refuse("30", "报文格式错误 txnAmt")),
    };
    if field(fields, "currencyCode") != "156" {
        return Err(refuse("30", "报文格式错误 currencyCode"));
    }
    let back_url = field(fields, "backUrl");
    if !(back_url.starts_with("http://") || back_url.starts_with("https://")) {
        return Err(refuse("30", "报文格式错误 backUrl"));
    }
    Ok((fen, back_url))
}

/// `payTimeout`, when given: a Beijing time still to come.
fn pay_timeout(fields: &[(String, String)]) -> Result<Option<OffsetDateTime>, Refusal> {
    let timeout = field(fields, "payTimeout");
    if timeout.is_empty() {
        return Ok(None);
    }
    match parse_beijing(timeout) {
        Some(at) if at > OffsetDateTime::now_utc() => Ok(Some(at)),
        _ => Err(refuse("30", "报文格式错误 payTimeout")),
    }
}

/// The fields an answer echoes from its request.
fn echo(fields: &[(String, String)]) -> Vec<(String, String)> {
    [
        "accessType",
        "bizType",
        "merId",
        "orderId",
        "txnTime",
        "txnType",
        "txnSubType",
    ]
    .iter()
    .map(|k| ((*k).to_owned(), field(fields, k).to_owned()))
    .filter(|(_, v)| !v.is_empty())
    .collect()
}

/// UnionPay's clearing day: from 23:00 Beijing time, the next day (sandbox choice, the
/// common cut-off).
fn clearing_day(at: OffsetDateTime) -> time::Date {
    let beijing = at.to_offset(offset!(+8));
    if beijing.hour() >= 23 {
        beijing.date().next_day().unwrap_or(beijing.date())
    } else {
        beijing.date()
    }
}

/// The clearing day as `settleDate` writes it (`MMDD`).
fn settle_date(at: OffsetDateTime) -> String {
    let day = clearing_day(at);
    format!("{:02}{:02}", u8::from(day.month()), day.day())
}

/// The day a `settleDate` (`MMDD`, no year) names: the latest one not after `today`.
fn month_day(text: &str, today: time::Date) -> Option<time::Date> {
    if text.len() != 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month = time::Month::try_from(text.get(..2)?.parse::<u8>().ok()?).ok()?;
    let day: u8 = text.get(2..)?.parse().ok()?;
    [today.year(), today.year() - 1]
        .into_iter()
        .filter_map(|year| time::Date::from_calendar_date(year, month, day).ok())
        .find(|date| *date <= today)
}

fn random_digits(n: usize) -> String {
    random_alnum(n * 3)
        .bytes()
        .map(|b| char::from(b'0' + b % 10))
        .take(n)
        .collect()
}

/// Parses a request form, refusing a field given twice.
fn form(body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if fields.iter().any(|(key, _)| *key == k) {
            return Err(refuse("30", format!("报文格式错误 {k} 重复")));
        }
        fields.push((k.into_owned(), v.into_owned()));
    }
    Ok(fields)
}

async fn entry(sandbox: Shared, headers: HeaderMap, body: Bytes, operation: Operation) -> Response {
    let fault = {
        let mut inner = sandbox.lock();
        inner.calls += 1;
        inner.fault.take()
    };
    let bad = fault.mode == super::FaultMode::BadSignature;
    with_faults(fault, async move {
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let outcome = if form_type {
            form(&body).and_then(|fields| operation(&sandbox, &fields))
        } else {
            Err(refuse("30", "报文格式错误 Content-Type"))
        };
        match outcome {
            Ok(answer) => sandbox.raw_answer(answer, bad),
            Err(Refusal(code, message)) => {
                let fields = form(&body).unwrap_or_default();
                let mut answer = echo(&fields);
                answer.push(("respCode".into(), code.into()));
                answer.push(("respMsg".into(), message));
                sandbox.raw_answer(answer, bad)
            }
        }
    })
    .await
}

async fn back_trans_req(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    entry(sandbox, headers, body, |s, f| s.back_trans(f)).await
}

async fn query_trans(State(sandbox): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    entry(sandbox, headers, body, |s, f| s.query(f)).await
}

/// `frontTransReq.do`: the browser's form. A refused form gets UnionPay-style error text.
async fn front_trans_req(
    State(sandbox): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let outcome = if form_type {
        form(&body).and_then(|fields| sandbox.front_trans(&fields))
    } else {
        Err(refuse("30", "报文格式错误 Content-Type"))
    };
    outcome.unwrap_or_else(|Refusal(code, message)| {
        (
            StatusCode::BAD_REQUEST,
            axum::response::Html(format!(
                "<!doctype html><meta charset=utf-8><title>UnionPay</title><p id=error>{} [{}]</p>",
                html_escape(&message),
                code
            )),
        )
            .into_response()
    })
}

async fn file_trans(State(sandbox): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    entry(sandbox, headers, body, |s, f| s.file_transfer(f)).await
}

/// `POST /sandbox/statement-clock {"today": "yyyy-MM-dd"}`: the clearing day the sandbox
/// treats as today (absent: the real one).
async fn control_statement_clock(
    State(sandbox): State<Shared>,
    axum::Json(clock): axum::Json<StatementClock>,
) -> Response {
    match clock.day() {
        Ok(day) => {
            sandbox.lock().bills.set_clock(day, false);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// The order a control names: UnionPay's `orderId`, or the Moongate id it was made from
/// (the conformance kit names orders so; UnionPay's order ids are Moongate's without `_`).
fn unionpay_order(order: &str) -> String {
    order.replace('_', "")
}

/// `POST /sandbox/pay {"out_trade_no": "…", "notify": true}` (or `qr_code`): the shopper
/// pays; `notify: false` loses the notification.
#[derive(Debug, Deserialize)]
struct PayBody {
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    qr_code: Option<String>,
    #[serde(default = "yes")]
    notify: bool,
}

fn yes() -> bool {
    true
}

/// A control body naming an order.
#[derive(Debug, Deserialize)]
struct OrderBody {
    out_trade_no: String,
}

fn find(
    sandbox: &UnionPaySandbox,
    order_id: Option<&str>,
    qr: Option<&str>,
) -> Option<(String, String)> {
    sandbox
        .lock()
        .orders
        .values()
        .find(|o| {
            order_id.is_some_and(|id| id == o.order_id)
                || (qr.is_some() && o.qr_code.as_deref() == qr)
        })
        .map(|o| (o.mer_id.clone(), o.order_id.clone()))
}

async fn control_pay(
    State(sandbox): State<Shared>,
    axum::Json(body): axum::Json<PayBody>,
) -> Response {
    let order = body.out_trade_no.as_deref().map(unionpay_order);
    let result = find(&sandbox, order.as_deref(), body.qr_code.as_deref())
        .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))
        .and_then(|(mer, order)| sandbox.settle(&mer, &order, State_::Paid, body.notify));
    control_reply(result)
}

async fn control_fault(
    State(sandbox): State<Shared>,
    axum::Json(body): axum::Json<FaultBody>,
) -> Response {
    sandbox.lock().fault.arm(&body);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /sandbox/notifications?out_trade_no=…`: an order's notifications (all without it).
#[derive(Debug, Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    out_trade_no: Option<String>,
}

async fn control_notifications(
    State(sandbox): State<Shared>,
    Query(query): Query<NoticeQuery>,
) -> Response {
    let order = query.out_trade_no.as_deref().map(unionpay_order);
    let sent: Vec<SentNotice> = sandbox
        .notices()
        .into_iter()
        .filter(|n| order.as_ref().is_none_or(|o| *o == n.order_id))
        .collect();
    axum::Json(sent).into_response()
}

/// `POST /sandbox/resend {"out_trade_no": "…"}`: the latest notification once more.
async fn control_resend(
    State(sandbox): State<Shared>,
    axum::Json(body): axum::Json<OrderBody>,
) -> Response {
    let Some(index) = sandbox.latest(&body.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let status = sandbox.deliver(index, None).await;
    axum::Json(json!({"status": status})).into_response()
}

/// `POST /sandbox/forge {"out_trade_no": "…"}`: the latest notification with its amount
/// altered after signing, as a forger would send it; answers whether it was acknowledged.
async fn control_forge(
    State(sandbox): State<Shared>,
    axum::Json(body): axum::Json<OrderBody>,
) -> Response {
    let Some(index) = sandbox.latest(&body.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let Some(original) = sandbox.lock().notices.get(index).map(|n| n.body.clone()) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let forged: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form_urlencoded::parse(original.as_bytes()).map(|(k, v)| {
            let v = if k == "txnAmt" {
                format!("{v}0")
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        }))
        .finish();
    let status = sandbox.deliver(index, Some(forged)).await;
    axum::Json(json!({"status": status, "acknowledged": status == 200})).into_response()
}

async fn control_stats(State(sandbox): State<Shared>) -> Response {
    let inner = sandbox.lock();
    control_reply(Ok(
        json!({"calls": inner.calls, "orders": inner.orders.len()}),
    ))
}

async fn wallet_scan(State(sandbox): State<Shared>, Query(scan): Query<WalletScan>) -> Response {
    let order = sandbox
        .lock()
        .orders
        .values()
        .find(|o| o.qr_code.as_deref() == Some(scan.code.as_str()))
        .cloned();
    match order {
        Some(order) => wallet_page("云闪付 UnionPay", &order.order_id, order.amount, &scan.code),
        None => (StatusCode::NOT_FOUND, "unknown code").into_response(),
    }
}

async fn wallet_pay(State(sandbox): State<Shared>, body: Bytes) -> Response {
    let code = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned());
    // A gateway consume's page names its order; a scanned code names the QR.
    let front = code.as_deref().and_then(|c| c.strip_prefix(FRONT_CODE));
    let found = match front {
        Some(order) => find(&sandbox, Some(order), None),
        None => find(&sandbox, None, code.as_deref()),
    };
    let result = found
        .ok_or((StatusCode::NOT_FOUND, "unknown code".to_owned()))
        .and_then(|(mer, order)| {
            sandbox
                .settle(&mer, &order, State_::Paid, true)
                .map(|_| (mer, order))
        });
    match result {
        Ok(key) if front.is_some() => {
            let order = sandbox.lock().orders.get(&key).cloned();
            match order {
                Some(order) => sandbox.front_return(&order),
                None => wallet_paid(Err((StatusCode::NOT_FOUND, "no order".to_owned()))),
            }
        }
        Ok(_) => wallet_paid(Ok(json!({}))),
        Err(error) => wallet_paid(Err(error)),
    }
}

/// The router: the gateway's operations and `/sandbox/*` controls.
pub fn router(sandbox: Shared) -> Router {
    Router::new()
        .route("/gateway/api/backTransReq.do", post(back_trans_req))
        .route("/gateway/api/queryTrans.do", post(query_trans))
        .route("/gateway/api/frontTransReq.do", post(front_trans_req))
        // The file-transfer host's one endpoint (filedownload.95516.com/).
        .route("/", post(file_trans))
        .route("/sandbox/statement-clock", post(control_statement_clock))
        .route("/sandbox/pay", post(control_pay))
        .route("/sandbox/fault", post(control_fault))
        .route("/sandbox/notifications", get(control_notifications))
        .route("/sandbox/resend", post(control_resend))
        .route("/sandbox/forge", post(control_forge))
        .route("/sandbox/stats", get(control_stats))
        .route("/sandbox/wallet", get(wallet_scan).post(wallet_pay))
        .with_state(sandbox)
}

/// Starts the sandbox on a bound listener.
pub async fn start_on(
    settings: UnionPaySandboxSettings,
    listener: TcpListener,
) -> Result<(Arc<UnionPaySandbox>, tokio::task::JoinHandle<()>), SandboxError> {
    let sandbox = Arc::new(UnionPaySandbox::new(settings)?);
    let task = super::serve(listener, router(Arc::clone(&sandbox)));
    Ok((sandbox, task))
}
