//! A strict local re-implementation of WeChat Pay API v3 and v2 `micropay`
//! (china-wallets.md section B and checklist F).
//!
//! - Requests: the `Authorization` items are parsed in any order; the 5-line message is rebuilt
//!   from the exact method, path + query and body bytes; the merchant's registered certificate
//!   serial and a 5-minute window are enforced; failures answer `401 SIGN_ERROR` with a
//!   `detail` like WeChat's.
//! - Responses, every one (errors and `204`s included), carry `Wechatpay-Timestamp/Nonce/
//!   Signature/Serial/Signature-Type`, signed in the merchant's key mode: public key
//!   (`PUB_KEY_ID_…`) or platform certificate (hex serial; `/v3/certificates` serves the
//!   certificate encrypted with the APIv3 key).
//! - Orders follow `NOTPAY → SUCCESS → REFUND` and `NOTPAY → CLOSED`; payment codes add
//!   `USERPAYING` and `PAYERROR`. Required fields are checked per product; amounts are fen.
//! - Notifications are AES-256-GCM encrypted with the merchant's APIv3 key, signed, and retried
//!   on WeChat's schedule (divisible for tests) until the answer is HTTP 200 or 204. A control
//!   endpoint sends `WECHATPAY/SIGNTEST/` probes.
//!
//! Choices where WeChat's behaviour is not published are marked "sandbox choice".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::wechatpay as sign;
use crate::protocol::wechatpay::{encrypt_resource, rfc3339_beijing};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{HttpMethod, HttpRequest};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::alipay::SandboxError;
use super::{FaultBody, FaultMode, Faults, control_reply, html_escape, statements, with_faults};
use crate::net::HttpClient;
use crate::text::random_alnum;

/// WeChat Pay's notification retry schedule after the first attempt (B.6), seconds.
const NOTIFY_SCHEDULE_SECS: [u64; 15] = [
    15, 15, 30, 180, 600, 1200, 1800, 1800, 1800, 3600, 10_800, 10_800, 10_800, 21_600, 21_600,
];

/// How long a refund stays `PROCESSING` before it succeeds (sandbox choice), before division.
const REFUND_SETTLE_MS: u64 = 2_000;

/// Which key a merchant's answers are signed under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// WeChat Pay public key, serial `PUB_KEY_ID_…` (every merchant since late 2024).
    PublicKey,
    /// Platform certificate, hex serial.
    Certificate,
}

/// One merchant registered at the sandbox.
#[derive(Debug)]
pub struct SandboxMerchant {
    /// `mchid`.
    pub mchid: String,
    /// App ids bound to it.
    pub appids: Vec<String>,
    /// Serial of its API certificate (what `serial_no` must say).
    pub merchant_serial_no: String,
    /// Its API public key (PEM).
    pub merchant_public_key_pem: String,
    /// APIv3 key (32 bytes).
    pub apiv3_key: String,
    /// API v2 key (32 bytes), for `micropay`.
    pub api_v2_key: Option<String>,
    /// How answers to it are signed.
    pub key_mode: KeyMode,
}

/// How the sandbox is set up.
#[derive(Debug)]
pub struct WechatSandboxSettings {
    /// The platform private key (PEM); it signs every answer and notification.
    pub private_key_pem: String,
    /// The platform certificate (PEM) of that key, served by `/v3/certificates`.
    pub certificate_pem: String,
    /// Its serial (hex).
    pub certificate_serial: String,
    /// The public key id for public-key mode.
    pub public_key_id: String,
    /// Registered merchants.
    pub merchants: Vec<SandboxMerchant>,
    /// Divides the notification schedule and refund settling (1 = real timing).
    pub time_divisor: u32,
}

struct Merchant {
    settings: SandboxMerchant,
    verifier: RsaVerifier,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TradeState {
    NotPay,
    UserPaying,
    Success,
    Refund,
    Closed,
    PayError,
}

impl TradeState {
    fn as_str(self) -> &'static str {
        match self {
            TradeState::NotPay => "NOTPAY",
            TradeState::UserPaying => "USERPAYING",
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::Closed => "CLOSED",
            TradeState::PayError => "PAYERROR",
        }
    }

    fn paid(self) -> bool {
        matches!(self, TradeState::Success | TradeState::Refund)
    }
}

#[derive(Clone, Debug)]
struct SandboxRefund {
    out_refund_no: String,
    refund_id: String,
    amount: i64,
    status: &'static str,
    notify_url: Option<String>,
    created_at: OffsetDateTime,
    success_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug)]
struct Order {
    mchid: String,
    appid: String,
    out_trade_no: String,
    trade_type: &'static str,
    description: String,
    total: i64,
    notify_url: Option<String>,
    expires_at: OffsetDateTime,
    state: TradeState,
    transaction_id: Option<String>,
    paid_at: Option<OffsetDateTime>,
    openid: String,
    prepay_id: String,
    fingerprint: String,
    refunds: Vec<SandboxRefund>,
}

impl Order {
    fn refunded(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != "CLOSED")
            .map(|r| r.amount)
            .sum()
    }

    fn state_at(&self, now: OffsetDateTime) -> TradeState {
        if self.state == TradeState::NotPay && self.expires_at <= now {
            TradeState::Closed
        } else {
            self.state
        }
    }

    fn transaction_json(&self, now: OffsetDateTime) -> Value {
        let state = self.state_at(now);
        let mut tx = json!({
            "appid": self.appid, "mchid": self.mchid, "out_trade_no": self.out_trade_no,
            "trade_type": self.trade_type, "trade_state": state.as_str(),
            "trade_state_desc": match state {
                TradeState::NotPay => "订单未支付",
                TradeState::UserPaying => "用户支付中，需要输入密码",
                TradeState::Success => "支付成功",
                TradeState::Refund => "转入退款",
                TradeState::Closed => "订单已关闭",
                TradeState::PayError => "支付失败",
            },
            "attach": "",
        });
        if let Some(map) = tx.as_object_mut() {
            if state.paid() {
                map.insert("transaction_id".into(), json!(self.transaction_id));
                map.insert("bank_type".into(), json!("OTHERS"));
                map.insert(
                    "success_time".into(),
                    json!(self.paid_at.and_then(rfc3339_beijing)),
                );
                map.insert("payer".into(), json!({"openid": self.openid}));
                map.insert(
                    "amount".into(),
                    json!({"total": self.total, "payer_total": self.total, "currency": "CNY", "payer_currency": "CNY"}),
                );
            } else {
                map.insert(
                    "amount".into(),
                    json!({"total": self.total, "currency": "CNY"}),
                );
            }
        }
        tx
    }

    fn refund_json(&self, refund: &SandboxRefund) -> Value {
        json!({
            "refund_id": refund.refund_id, "out_refund_no": refund.out_refund_no,
            "transaction_id": self.transaction_id, "out_trade_no": self.out_trade_no,
            "channel": "ORIGINAL", "user_received_account": "支付用户零钱",
            "success_time": refund.success_at.and_then(rfc3339_beijing),
            "create_time": rfc3339_beijing(refund.created_at),
            "status": refund.status, "funds_account": "AVAILABLE",
            "amount": {
                "total": self.total, "refund": refund.amount, "payer_total": self.total,
                "payer_refund": refund.amount, "settlement_refund": refund.amount,
                "settlement_total": self.total, "discount_refund": 0, "currency": "CNY",
                "refund_fee": 0,
            },
            "promotion_detail": [],
        })
    }
}

/// One notification and its delivery attempts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SentNotification {
    /// Envelope id, stable across retries.
    pub id: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, …
    pub event_type: String,
    /// The order.
    pub out_trade_no: String,
    /// Where it goes.
    pub url: String,
    /// The signed body as sent.
    pub body: String,
    /// Merchant it belongs to.
    pub mchid: String,
    /// Attempts made.
    pub attempts: u32,
    /// True once answered 200 or 204.
    pub acknowledged: bool,
    /// Status of the last answer (0 when unreachable).
    pub last_status: u16,
}

struct Inner {
    orders: HashMap<(String, String), Order>,
    fault: Faults,
    notifications: Vec<SentNotification>,
    counter: u64,
    calls: u64,
    /// While `Some`, new notifications wait here instead of going out (`/sandbox/hold`).
    held: Option<Vec<usize>>,
    /// Issued bill downloads (labelled with the owning mchid) and the statement clock.
    bills: statements::BillDesk,
}

/// Shared sandbox state.
pub struct WechatSandbox {
    signer: RsaSigner,
    certificate_pem: String,
    certificate_serial: String,
    public_key_id: String,
    merchants: HashMap<String, Merchant>,
    time_divisor: u32,
    client: HttpClient,
    inner: Mutex<Inner>,
    /// Added to the timestamps the sandbox signs (`/sandbox/clock`): a provider whose clock
    /// is off.
    clock_skew_secs: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for WechatSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatSandbox")
            .field("merchants", &self.merchants.len())
            .finish_non_exhaustive()
    }
}

type Shared = Arc<WechatSandbox>;

/// An answer before signing.
struct Reply {
    status: StatusCode,
    body: String,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: StatusCode::OK,
        body: body.to_string(),
    }
}

fn fail(status: StatusCode, code: &str, message: &str) -> Reply {
    Reply {
        status,
        body: json!({"code": code, "message": message}).to_string(),
    }
}

fn param_error(message: &str) -> Reply {
    fail(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
}

fn sign_error(detail: Value) -> Reply {
    Reply {
        status: StatusCode::UNAUTHORIZED,
        body: json!({"code": "SIGN_ERROR", "message": "签名错误，请检查后再试", "detail": detail})
            .to_string(),
    }
}

/// `[0-9A-Za-z_-|*]{6,32}`.
fn valid_order_no(value: &str) -> bool {
    (6..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'|' | b'*'))
}

/// Sandbox choice: WeChat demands https notification URLs; plain http is accepted only for a
/// loopback host so Moongate's local demo and tests can receive notifications.
fn valid_notify_url(url: &str) -> bool {
    moongate_contract::http::check_base_url(url).is_ok()
}

impl WechatSandbox {
    /// Builds the state.
    pub fn new(settings: WechatSandboxSettings) -> Result<WechatSandbox, SandboxError> {
        let signer = RsaSigner::from_pem(&settings.private_key_pem)
            .map_err(|e| SandboxError::Key(format!("sandbox private key: {e}")))?;
        let mut merchants = HashMap::new();
        for merchant in settings.merchants {
            let verifier =
                RsaVerifier::from_pem(&merchant.merchant_public_key_pem).map_err(|e| {
                    SandboxError::Key(format!("public key of merchant {}: {e}", merchant.mchid))
                })?;
            if merchant.apiv3_key.len() != 32 {
                return Err(SandboxError::Key(format!(
                    "APIv3 key of merchant {} must be 32 bytes",
                    merchant.mchid
                )));
            }
            merchants.insert(
                merchant.mchid.clone(),
                Merchant {
                    settings: merchant,
                    verifier,
                },
            );
        }
        let client = HttpClient::new(Duration::from_secs(3), Duration::from_secs(5))
            .map_err(SandboxError::Io)?;
        Ok(WechatSandbox {
            signer,
            certificate_pem: settings.certificate_pem,
            certificate_serial: settings.certificate_serial.to_ascii_uppercase(),
            public_key_id: settings.public_key_id,
            merchants,
            time_divisor: settings.time_divisor.max(1),
            client,
            clock_skew_secs: std::sync::atomic::AtomicI64::new(0),
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                fault: Faults::none(),
                notifications: Vec::new(),
                counter: 0,
                calls: 0,
                held: None,
                bills: statements::BillDesk::default(),
            }),
        })
    }

    /// Every order the sandbox holds.
    pub fn orders(&self) -> Vec<super::OrderView> {
        self.lock()
            .orders
            .values()
            .map(|o| super::OrderView {
                out_trade_no: o.out_trade_no.clone(),
                total: o.total,
                paid: o.state.paid(),
                refunds: o
                    .refunds
                    .iter()
                    .filter(|r| r.status != "CLOSED")
                    .map(|r| (r.out_refund_no.clone(), r.amount))
                    .collect(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn serial_for(&self, mode: KeyMode) -> &str {
        match mode {
            KeyMode::PublicKey => &self.public_key_id,
            KeyMode::Certificate => &self.certificate_serial,
        }
    }

    /// The `Wechatpay-*` headers over `body`.
    fn signature_headers(
        &self,
        mode: KeyMode,
        body: &[u8],
        corrupt: bool,
    ) -> Vec<(String, String)> {
        let skew = self
            .clock_skew_secs
            .load(std::sync::atomic::Ordering::SeqCst);
        let timestamp = (OffsetDateTime::now_utc().unix_timestamp() + skew).to_string();
        let nonce = random_alnum(32);
        let mut message = sign::response_message(&timestamp, &nonce, body);
        if corrupt {
            message.push(b' ');
        }
        let signature = self.signer.sign_base64(&message).unwrap_or_default();
        vec![
            ("wechatpay-timestamp".into(), timestamp),
            ("wechatpay-nonce".into(), nonce),
            ("wechatpay-signature".into(), signature),
            ("wechatpay-serial".into(), self.serial_for(mode).to_owned()),
            ("wechatpay-signature-type".into(), sign::SCHEME.into()),
        ]
    }

    fn respond(&self, mode: KeyMode, reply: Reply, corrupt: bool) -> Response {
        let body = if reply.status == StatusCode::NO_CONTENT {
            String::new()
        } else {
            reply.body
        };
        let mut response = (reply.status, body.clone()).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.signature_headers(mode, body.as_bytes(), corrupt) {
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::try_from(name),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        let request_id = format!("08{}-{}", random_alnum(24), 0);
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            headers.insert("request-id", value);
        }
        if reply.status != StatusCode::NO_CONTENT {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        response
    }

    /// Checks the `Authorization` header against the exact request; returns the merchant.
    fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<&Merchant, (KeyMode, Reply)> {
        let default_mode = KeyMode::PublicKey;
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Some(authorization) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Err((
                default_mode,
                sign_error(
                    json!({"field": "authorization", "location": "header", "issue": "HTTP header缺少Authorization"}),
                ),
            ));
        };
        let items = sign::parse_authorization(authorization).map_err(|issue| {
            (
                default_mode,
                sign_error(json!({"field": "authorization", "location": "header", "issue": issue})),
            )
        })?;
        let Some(merchant) = self.merchants.get(&items.mchid) else {
            return Err((
                default_mode,
                fail(StatusCode::NOT_FOUND, "MCH_NOT_EXISTS", "商户号不存在"),
            ));
        };
        let mode = merchant.settings.key_mode;
        if !items
            .serial_no
            .eq_ignore_ascii_case(&merchant.settings.merchant_serial_no)
        {
            return Err((
                mode,
                sign_error(
                    json!({"field": "serial_no", "location": "authorization", "issue": "商户证书序列号有误"}),
                ),
            ));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let fresh = items
            .timestamp
            .parse::<i64>()
            .is_ok_and(|t| (now - t).abs() < sign::MAX_SKEW_SECS);
        if !fresh {
            return Err((
                mode,
                sign_error(
                    json!({"field": "timestamp", "location": "authorization", "issue": "请求时间戳已过期"}),
                ),
            ));
        }
        let message = sign::request_message(
            method.as_str(),
            path_and_query,
            &items.timestamp,
            &items.nonce_str,
            body,
        );
        if !merchant.verifier.verify_base64(&message, &items.signature) {
            let truncated: String = String::from_utf8_lossy(&message).chars().take(64).collect();
            return Err((
                mode,
                sign_error(json!({
                    "detail": {"issue": "sign not match"}, "field": "signature",
                    "location": "authorization",
                    "sign_information": {
                        "method": method.as_str(), "sign_message_length": message.len(),
                        "truncated_sign_message": truncated, "url": path_and_query,
                    }
                })),
            ));
        }
        if let Some(serial) = headers
            .get("wechatpay-serial")
            .and_then(|v| v.to_str().ok())
            && serial != self.public_key_id
            && !serial.eq_ignore_ascii_case(&self.certificate_serial)
        {
            return Err((
                mode,
                param_error("Wechatpay-Serial 对应的平台证书或公钥不存在"),
            ));
        }
        Ok(merchant)
    }
}

/// The router: v3 endpoints, v2 `micropay` and `/sandbox/*` controls.
pub fn router(sandbox: Shared) -> Router {
    Router::new()
        .route("/v3/pay/transactions/{product}", post(v3_entry))
        .route("/v3/pay/transactions/out-trade-no/{no}", get(v3_entry))
        .route(
            "/v3/pay/transactions/out-trade-no/{no}/close",
            post(v3_entry),
        )
        .route("/v3/refund/domestic/refunds", post(v3_entry))
        .route("/v3/refund/domestic/refunds/{no}", get(v3_entry))
        .route("/v3/certificates", get(v3_entry))
        .route("/v3/bill/tradebill", get(v3_entry))
        .route("/v3/billdownload/file", get(v3_entry))
        .route("/sandbox/statement-clock", post(control_statement_clock))
        .route("/pay/micropay", post(micropay))
        .route("/sandbox/pay", post(control_pay))
        .route("/sandbox/fault", post(control_fault))
        .route("/sandbox/clock", post(control_clock))
        .route("/sandbox/hold", post(control_hold))
        .route("/sandbox/release", post(control_release))
        .route("/sandbox/stats", get(control_stats))
        .route("/sandbox/notifications", get(control_notifications))
        .route("/sandbox/resend", post(control_resend))
        .route("/sandbox/probe", post(control_probe))
        .route("/sandbox/forge", post(control_forge))
        .route("/sandbox/h5", get(h5_page))
        .route("/sandbox/wallet", get(wallet_scan).post(wallet_pay))
        .route("/sandbox/h5/pay", post(h5_pay))
        .with_state(sandbox)
}

/// Starts the sandbox on a bound listener.
pub async fn start_on(
    settings: WechatSandboxSettings,
    listener: TcpListener,
) -> Result<(Arc<WechatSandbox>, tokio::task::JoinHandle<()>), SandboxError> {
    let sandbox = Arc::new(WechatSandbox::new(settings)?);
    let task = super::serve(listener, router(Arc::clone(&sandbox)));
    Ok((sandbox, task))
}

/// Every v3 call: fault injection, authentication, dispatch, signed answer.
async fn v3_entry(
    State(sb): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = sb.lock();
        inner.calls += 1;
        inner.fault.take()
    };
    let corrupt = fault.mode == FaultMode::BadSignature;
    with_faults(fault, v3_handle(sb, method, uri, headers, body, corrupt)).await
}

async fn v3_handle(
    sb: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    corrupt: bool,
) -> Response {
    let merchant = match sb.authenticate(&method, &uri, &headers, &body) {
        Ok(merchant) => merchant,
        Err((mode, reply)) => return sb.respond(mode, reply, corrupt),
    };
    let mode = merchant.settings.key_mode;
    if uri.path() == "/v3/billdownload/file" {
        // The file itself is unsigned; the caller checks the SHA-1 from `tradebill` (B.7).
        return sb.bill_file(&merchant.settings.mchid, uri.query().unwrap_or(""));
    }
    if method == Method::POST {
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
        if !json_body {
            return sb.respond(
                mode,
                param_error("Content-Type 须为 application/json"),
                corrupt,
            );
        }
    }
    let reply = dispatch(&sb, merchant, &method, &uri, &body, headers_host(&headers));
    sb.respond(mode, reply, corrupt)
}

fn headers_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

fn dispatch(
    sb: &Shared,
    merchant: &Merchant,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    host: String,
) -> Reply {
    let path = uri.path();
    let query: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let json_body = || -> Result<serde_json::Map<String, Value>, Reply> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(param_error("请求体不是合法的JSON")),
        }
    };
    let mchid = merchant.settings.mchid.as_str();
    let result = if let Some(product) = path.strip_prefix("/v3/pay/transactions/")
        && !product.contains('/')
        && *method == Method::POST
    {
        json_body().and_then(|b| create_order(sb, merchant, product, &b, &host))
    } else if let Some(rest) = path.strip_prefix("/v3/pay/transactions/out-trade-no/") {
        let decoded =
            |s: &str| percent_decode(s).ok_or_else(|| param_error("out_trade_no 格式错误"));
        match rest.strip_suffix("/close") {
            Some(no) if *method == Method::POST => {
                decoded(no).and_then(|no| json_body().and_then(|b| close_order(sb, mchid, &no, &b)))
            }
            _ if *method == Method::GET => decoded(rest).and_then(|no| {
                if query.get("mchid").map(String::as_str) != Some(mchid) {
                    return Err(param_error("mchid 与请求方商户号不一致"));
                }
                query_order(sb, mchid, &no)
            }),
            _ => Err(fail(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "资源不存在",
            )),
        }
    } else if path == "/v3/refund/domestic/refunds" && *method == Method::POST {
        json_body().and_then(|b| create_refund(sb, merchant, &b))
    } else if let Some(no) = path.strip_prefix("/v3/refund/domestic/refunds/") {
        percent_decode(no)
            .ok_or_else(|| param_error("out_refund_no 格式错误"))
            .and_then(|no| query_refund(sb, mchid, &no))
    } else if path == "/v3/certificates" {
        certificates(sb, merchant)
    } else if path == "/v3/bill/tradebill" && *method == Method::GET {
        sb.trade_bill(merchant, &query, &host)
    } else {
        Err(fail(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "资源不存在",
        ))
    };
    result.unwrap_or_else(|reply| reply)
}

fn percent_decode(segment: &str) -> Option<String> {
    let decoded: String = form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some(decoded)
}

fn str_field<'a>(map: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a str> {
    let mut current: Option<&Value> = None;
    for (index, part) in path.split('.').enumerate() {
        current = if index == 0 {
            map.get(part)
        } else {
            current?.get(part)
        };
    }
    current?.as_str()
}

fn required(map: &serde_json::Map<String, Value>, path: &str, name: &str) -> Result<String, Reply> {
    str_field(map, path)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            param_error(&format!(
                "输入源“/body/{}”映射到字段“{name}”必填性规则校验失败，此字段为必填项",
                path.replace('.', "/")
            ))
        })
}

fn create_order(
    sb: &Shared,
    merchant: &Merchant,
    product: &str,
    body: &serde_json::Map<String, Value>,
    host: &str,
) -> Result<Reply, Reply> {
    let trade_type = match product {
        "native" => "NATIVE",
        "jsapi" => "JSAPI",
        "h5" => "MWEB",
        _ => {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "资源不存在",
            ));
        }
    };
    let appid = required(body, "appid", "应用ID")?;
    let mchid = required(body, "mchid", "直连商户号")?;
    let description = required(body, "description", "商品描述")?;
    let out_trade_no = required(body, "out_trade_no", "商户订单号")?;
    let notify_url = required(body, "notify_url", "通知地址")?;
    if mchid != merchant.settings.mchid {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "请求方商户号与mchid不一致",
        ));
    }
    if !merchant.settings.appids.contains(&appid) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    if description.chars().count() > 127 {
        return Err(param_error("description 超出长度限制"));
    }
    if !valid_order_no(&out_trade_no) {
        return Err(param_error("out_trade_no 格式错误"));
    }
    if !valid_notify_url(&notify_url) || notify_url.contains('?') {
        return Err(param_error("notify_url 须为https地址且不能携带参数"));
    }
    let Some(amount) = body.get("amount").and_then(Value::as_object) else {
        return Err(param_error(
            "输入源“/body/amount”映射到字段“订单金额”必填性规则校验失败，此字段为必填项",
        ));
    };
    let Some(total) = amount
        .get("total")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 1)
    else {
        return Err(param_error("amount.total 须为正整数（单位：分）"));
    };
    if amount
        .get("currency")
        .is_some_and(|c| c.as_str() != Some("CNY"))
    {
        return Err(param_error("amount.currency 仅支持CNY"));
    }
    let now = OffsetDateTime::now_utc();
    let expires_at = match str_field(body, "time_expire") {
        Some(text) => {
            match OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
                Ok(t) if t > now => t,
                _ => return Err(param_error("time_expire 格式错误或已过期")),
            }
        }
        // Unpaid orders close after 7 days.
        None => now + time::Duration::days(7),
    };
    let openid = match trade_type {
        "JSAPI" => required(body, "payer.openid", "用户标识")?,
        _ => format!("oSandbox{}", random_alnum(20)),
    };
    if trade_type == "MWEB" {
        required(body, "scene_info.payer_client_ip", "用户终端IP")?;
        required(body, "scene_info.h5_info.type", "场景类型")?;
    }
    let payer_openid = str_field(body, "payer.openid").unwrap_or_default();
    let fingerprint = format!("{appid}|{description}|{total}|{trade_type}|{payer_openid}");
    let mut inner = sb.lock();
    inner.counter += 1;
    let number = inner.counter;
    let key = (mchid.clone(), out_trade_no.clone());
    let prepay_id = match inner.orders.get(&key) {
        Some(order) if order.state.paid() => {
            return Err(fail(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付"));
        }
        Some(order) if order.state_at(now) == TradeState::Closed => {
            return Err(fail(StatusCode::BAD_REQUEST, "ORDERCLOSED", "该订单已关闭"));
        }
        Some(order) if order.fingerprint != fingerprint => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "201 商户订单号重复",
            ));
        }
        Some(order) => order.prepay_id.clone(),
        None => {
            let prepay_id = format!("wx{}{:016}", now.unix_timestamp(), number);
            inner.orders.insert(
                key,
                Order {
                    mchid,
                    appid,
                    out_trade_no,
                    trade_type,
                    description,
                    total,
                    notify_url: Some(notify_url),
                    expires_at,
                    state: TradeState::NotPay,
                    transaction_id: None,
                    paid_at: None,
                    openid,
                    prepay_id: prepay_id.clone(),
                    fingerprint,
                    refunds: Vec::new(),
                },
            );
            prepay_id
        }
    };
    Ok(ok(match trade_type {
        "NATIVE" => json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={prepay_id}")}),
        "JSAPI" => json!({"prepay_id": prepay_id}),
        _ => {
            json!({"h5_url": format!("http://{host}/sandbox/h5?prepay_id={prepay_id}&package=2150917749")})
        }
    }))
}

fn query_order(sb: &Shared, mchid: &str, out_trade_no: &str) -> Result<Reply, Reply> {
    let inner = sb.lock();
    let order = inner
        .orders
        .get(&(mchid.to_owned(), out_trade_no.to_owned()))
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
    Ok(ok(order.transaction_json(OffsetDateTime::now_utc())))
}

fn close_order(
    sb: &Shared,
    mchid: &str,
    out_trade_no: &str,
    body: &serde_json::Map<String, Value>,
) -> Result<Reply, Reply> {
    if required(body, "mchid", "直连商户号")? != mchid {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "请求方商户号与mchid不一致",
        ));
    }
    let mut inner = sb.lock();
    let order = inner
        .orders
        .get_mut(&(mchid.to_owned(), out_trade_no.to_owned()))
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
    match order.state {
        TradeState::Success | TradeState::Refund => {
            Err(fail(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付"))
        }
        // Sandbox choice: closing a closed order answers 204 again.
        TradeState::NotPay | TradeState::Closed | TradeState::UserPaying | TradeState::PayError => {
            order.state = TradeState::Closed;
            Ok(Reply {
                status: StatusCode::NO_CONTENT,
                body: String::new(),
            })
        }
    }
}

fn create_refund(
    sb: &Shared,
    merchant: &Merchant,
    body: &serde_json::Map<String, Value>,
) -> Result<Reply, Reply> {
    let mchid = merchant.settings.mchid.clone();
    let out_trade_no = required(body, "out_trade_no", "商户订单号")?;
    let out_refund_no = required(body, "out_refund_no", "商户退款单号")?;
    if !valid_order_no(&out_refund_no) {
        return Err(param_error("out_refund_no 格式错误"));
    }
    let notify_url = str_field(body, "notify_url").map(str::to_owned);
    if let Some(url) = &notify_url
        && (!valid_notify_url(url) || url.contains('?'))
    {
        return Err(param_error("notify_url 须为https地址且不能携带参数"));
    }
    let amount = body.get("amount").and_then(Value::as_object);
    let refund_amount = amount.and_then(|a| a.get("refund")).and_then(Value::as_i64);
    let total = amount.and_then(|a| a.get("total")).and_then(Value::as_i64);
    let currency = amount
        .and_then(|a| a.get("currency"))
        .and_then(Value::as_str);
    let (Some(refund_amount), Some(total), Some("CNY")) = (refund_amount, total, currency) else {
        return Err(param_error(
            "amount.refund、amount.total、amount.currency 为必填项",
        ));
    };
    if refund_amount < 1 {
        return Err(param_error("amount.refund 须为正整数（单位：分）"));
    }
    let now = OffsetDateTime::now_utc();
    let (reply, settle) = {
        let mut inner = sb.lock();
        inner.counter += 1;
        let number = inner.counter;
        let order = inner
            .orders
            .get_mut(&(mchid.clone(), out_trade_no.clone()))
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        if let Some(existing) = order
            .refunds
            .iter()
            .find(|r| r.out_refund_no == out_refund_no)
        {
            if existing.amount != refund_amount {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "退款单号已存在，但退款金额与之前请求不一致",
                ));
            }
            return Ok(ok(order.refund_json(existing)));
        }
        if !order.state.paid() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单未支付，不能退款",
            ));
        }
        if total != order.total {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额与原订单不一致",
            ));
        }
        if order.refunded() + refund_amount > order.total {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额",
            ));
        }
        let refund = SandboxRefund {
            out_refund_no: out_refund_no.clone(),
            refund_id: format!("5030{}{:012}", now.unix_timestamp(), number),
            amount: refund_amount,
            status: "PROCESSING",
            notify_url,
            created_at: now,
            success_at: None,
        };
        let reply = ok(order.refund_json(&refund));
        order.refunds.push(refund);
        order.state = TradeState::Refund;
        (reply, (mchid, out_trade_no, out_refund_no))
    };
    let sandbox = Arc::clone(sb);
    let wait = Duration::from_millis(REFUND_SETTLE_MS / u64::from(sb.time_divisor));
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        sandbox.settle_refund(&settle.0, &settle.1, &settle.2);
    });
    Ok(reply)
}

fn query_refund(sb: &Shared, mchid: &str, out_refund_no: &str) -> Result<Reply, Reply> {
    let inner = sb.lock();
    inner
        .orders
        .values()
        .filter(|o| o.mchid == mchid)
        .find_map(|o| {
            o.refunds
                .iter()
                .find(|r| r.out_refund_no == out_refund_no)
                .map(|r| ok(o.refund_json(r)))
        })
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"))
}

fn certificates(sb: &Shared, merchant: &Merchant) -> Result<Reply, Reply> {
    if merchant.settings.key_mode == KeyMode::PublicKey {
        // Merchants onboarded in public-key mode have no platform certificate (B.3).
        return Err(fail(StatusCode::NOT_FOUND, "NOT_FOUND", "证书不存在"));
    }
    let nonce = random_alnum(12);
    let ciphertext = encrypt_resource(
        merchant.settings.apiv3_key.as_bytes(),
        &nonce,
        "certificate",
        sb.certificate_pem.as_bytes(),
    )
    .ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        )
    })?;
    let now = OffsetDateTime::now_utc();
    Ok(ok(json!({"data": [{
        "serial_no": sb.certificate_serial,
        "effective_time": rfc3339_beijing(now - time::Duration::days(1)),
        "expire_time": rfc3339_beijing(now + time::Duration::days(3650)),
        "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                                "associated_data": "certificate", "ciphertext": ciphertext},
    }]})))
}

impl WechatSandbox {
    fn settle_refund(self: &Arc<Self>, mchid: &str, out_trade_no: &str, out_refund_no: &str) {
        let snapshot = {
            let mut inner = self.lock();
            let Some(order) = inner
                .orders
                .get_mut(&(mchid.to_owned(), out_trade_no.to_owned()))
            else {
                return;
            };
            let Some(refund) = order
                .refunds
                .iter_mut()
                .find(|r| r.out_refund_no == out_refund_no)
            else {
                return;
            };
            refund.status = "SUCCESS";
            refund.success_at = Some(OffsetDateTime::now_utc());
            let refund = refund.clone();
            (order.clone(), refund)
        };
        let (order, refund) = snapshot;
        let Some(url) = refund.notify_url.clone() else {
            return;
        };
        let plain = json!({
            "mchid": order.mchid, "transaction_id": order.transaction_id,
            "out_trade_no": order.out_trade_no, "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no, "refund_status": refund.status,
            "success_time": refund.success_at.and_then(rfc3339_beijing),
            "user_received_account": "支付用户零钱",
            "amount": {"total": order.total, "refund": refund.amount,
                       "payer_total": order.total, "payer_refund": refund.amount},
        });
        self.notify(&order, url, "REFUND.SUCCESS", "退款成功", "refund", &plain);
    }

    /// Encrypts, signs and starts delivering a notification.
    fn notify(
        self: &Arc<Self>,
        order: &Order,
        url: String,
        event_type: &str,
        summary: &str,
        original_type: &str,
        plain: &Value,
    ) {
        let Some(merchant) = self.merchants.get(&order.mchid) else {
            return;
        };
        let nonce = random_alnum(12);
        let Some(ciphertext) = encrypt_resource(
            merchant.settings.apiv3_key.as_bytes(),
            &nonce,
            original_type,
            plain.to_string().as_bytes(),
        ) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let id = format!(
            "{}-{}-{}",
            random_alnum(8).to_ascii_lowercase(),
            random_alnum(4).to_ascii_lowercase(),
            random_alnum(12).to_ascii_lowercase()
        );
        let body = json!({
            "id": id, "create_time": rfc3339_beijing(now),
            "resource_type": "encrypt-resource", "event_type": event_type, "summary": summary,
            "resource": {"original_type": original_type, "algorithm": "AEAD_AES_256_GCM",
                         "ciphertext": ciphertext, "associated_data": original_type, "nonce": nonce},
        })
        .to_string();
        let index = {
            let mut inner = self.lock();
            inner.notifications.push(SentNotification {
                id,
                event_type: event_type.to_owned(),
                out_trade_no: order.out_trade_no.clone(),
                url: url.clone(),
                body: body.clone(),
                mchid: order.mchid.clone(),
                attempts: 0,
                acknowledged: false,
                last_status: 0,
            });
            let index = inner.notifications.len() - 1;
            if let Some(held) = inner.held.as_mut() {
                held.push(index);
                return;
            }
            index
        };
        let this = Arc::clone(self);
        let mode = merchant.settings.key_mode;
        tokio::spawn(async move { this.deliver(index, mode).await });
    }

    /// One delivery attempt; the signature is made fresh (WeChat re-signs each retry).
    async fn attempt(&self, index: usize, mode: KeyMode, probe: bool) -> Option<u16> {
        let (url, body) = {
            let inner = self.lock();
            let sent = inner.notifications.get(index)?;
            (sent.url.clone(), sent.body.clone())
        };
        let mut headers = self.signature_headers(mode, body.as_bytes(), false);
        if probe {
            for (name, value) in headers.iter_mut() {
                if name == "wechatpay-signature" {
                    *value = format!("{}{value}", sign::SIGNTEST_PREFIX);
                }
            }
        }
        headers.push(("content-type".into(), "application/json".into()));
        let request = HttpRequest {
            method: HttpMethod::Post,
            url,
            headers,
            body: body.into_bytes(),
        };
        let status = match self.client.send(&request).await {
            Ok(response) => response.status,
            Err(_) => 0,
        };
        if !probe {
            let mut inner = self.lock();
            if let Some(sent) = inner.notifications.get_mut(index) {
                sent.attempts += 1;
                sent.last_status = status;
                sent.acknowledged |= status == 200 || status == 204;
            }
        }
        Some(status)
    }

    async fn deliver(self: Arc<Self>, index: usize, mode: KeyMode) {
        let waits = std::iter::once(0).chain(NOTIFY_SCHEDULE_SECS.iter().map(|s| s * 1000));
        for wait_ms in waits {
            tokio::time::sleep(Duration::from_millis(
                wait_ms / u64::from(self.time_divisor),
            ))
            .await;
            match self.attempt(index, mode, false).await {
                Some(200 | 204) | None => return,
                Some(_) => {}
            }
        }
    }

    /// The shopper pays (scan, JSAPI confirmation, H5 cashier or payment-code password).
    fn pay(self: &Arc<Self>, control: &ControlOrder) -> Result<Value, (StatusCode, String)> {
        let now = OffsetDateTime::now_utc();
        let snapshot = {
            let mut inner = self.lock();
            inner.counter += 1;
            let number = inner.counter;
            let order = inner
                .orders
                .values_mut()
                .find(|o| {
                    o.out_trade_no == control.out_trade_no
                        && control.mchid.as_ref().is_none_or(|m| *m == o.mchid)
                })
                .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
            match order.state_at(now) {
                TradeState::NotPay | TradeState::UserPaying => {}
                TradeState::Closed => {
                    return Err((StatusCode::CONFLICT, "the order is closed".to_owned()));
                }
                TradeState::Success | TradeState::Refund => {
                    return Err((StatusCode::CONFLICT, "already paid".to_owned()));
                }
                TradeState::PayError => {
                    return Err((StatusCode::CONFLICT, "the payment failed".to_owned()));
                }
            }
            order.state = TradeState::Success;
            order.paid_at = Some(now);
            order.transaction_id = Some(format!("4200{}{:014}", now.unix_timestamp(), number));
            order.clone()
        };
        // Payment codes (MICROPAY) have no notify_url: the cashier polls.
        if let Some(url) = snapshot.notify_url.clone().filter(|_| control.notify) {
            let plain = snapshot.transaction_json(now);
            self.notify(
                &snapshot,
                url,
                "TRANSACTION.SUCCESS",
                "支付成功",
                "transaction",
                &plain,
            );
        }
        Ok(json!({
            "out_trade_no": snapshot.out_trade_no,
            "transaction_id": snapshot.transaction_id,
            "trade_state": snapshot.state.as_str(),
        }))
    }
}

#[derive(Debug, Deserialize)]
struct ControlOrder {
    out_trade_no: String,
    #[serde(default)]
    mchid: Option<String>,
    /// `false` pays without sending the notification (a lost notification).
    #[serde(default = "yes")]
    notify: bool,
}

fn yes() -> bool {
    true
}

async fn control_pay(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.pay(&order))
}

/// How many provider calls the sandbox has received (every one, faulted or not).
async fn control_stats(State(sb): State<Shared>) -> Response {
    axum::Json(json!({"calls": sb.lock().calls})).into_response()
}

/// Holds new notifications back until `/sandbox/release`.
async fn control_hold(State(sb): State<Shared>) -> StatusCode {
    sb.lock().held.get_or_insert_with(Vec::new);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct ReleaseBody {
    /// Send them newest first (a reordered delivery).
    #[serde(default)]
    reverse: bool,
}

/// Sends the held notifications, in order or reversed, one after the other, then delivers
/// normally again.
async fn control_release(
    State(sb): State<Shared>,
    axum::Json(release): axum::Json<ReleaseBody>,
) -> Response {
    let mut held = sb.lock().held.take().unwrap_or_default();
    if release.reverse {
        held.reverse();
    }
    let count = held.len();
    for index in held {
        let mode = {
            let inner = sb.lock();
            let mchid = inner.notifications.get(index).map(|n| n.mchid.clone());
            mchid
                .and_then(|m| sb.merchants.get(&m).map(|m| m.settings.key_mode))
                .unwrap_or(KeyMode::PublicKey)
        };
        // The first attempt of each in turn, so the order holds; retries follow their schedule.
        let status = sb.attempt(index, mode, false).await;
        if !matches!(status, Some(200 | 204)) {
            let this = Arc::clone(&sb);
            tokio::spawn(async move { this.deliver(index, mode).await });
        }
    }
    axum::Json(json!({"released": count})).into_response()
}

#[derive(Debug, Deserialize)]
struct ClockBody {
    skew_secs: i64,
}

/// Skews the clock the sandbox signs with (answers and notifications).
async fn control_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<ClockBody>,
) -> StatusCode {
    sb.clock_skew_secs
        .store(clock.skew_secs, std::sync::atomic::Ordering::SeqCst);
    StatusCode::NO_CONTENT
}

async fn control_fault(
    State(sb): State<Shared>,
    axum::Json(fault): axum::Json<FaultBody>,
) -> StatusCode {
    sb.lock().fault.arm(&fault);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct NotificationQuery {
    out_trade_no: String,
}

async fn control_notifications(
    State(sb): State<Shared>,
    Query(query): Query<NotificationQuery>,
) -> Response {
    let sent: Vec<SentNotification> = sb
        .lock()
        .notifications
        .iter()
        .filter(|n| n.out_trade_no == query.out_trade_no)
        .cloned()
        .collect();
    axum::Json(sent).into_response()
}

fn latest_notification(sb: &WechatSandbox, out_trade_no: &str) -> Option<(usize, KeyMode)> {
    let inner = sb.lock();
    let index = inner
        .notifications
        .iter()
        .rposition(|n| n.out_trade_no == out_trade_no)?;
    let mchid = &inner.notifications.get(index)?.mchid;
    let mode = sb.merchants.get(mchid)?.settings.key_mode;
    Some((index, mode))
}

/// Sends the latest notification of an order once more (a duplicate with the same `id`).
async fn control_resend(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let status = sb.attempt(index, mode, false).await.unwrap_or(0);
    axum::Json(json!({"status": status})).into_response()
}

/// Sends a `WECHATPAY/SIGNTEST/` probe of the latest notification; answers with the status
/// the receiver gave (it must be 4XX or 5XX).
async fn control_probe(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let status = sb.attempt(index, mode, true).await.unwrap_or(0);
    axum::Json(json!({"status": status})).into_response()
}

/// Delivers the latest notification of an order once more, signed over its body but with the
/// body altered after signing, as a forger would; answers whether the receiver acknowledged
/// it (200 or 204). Not counted as an attempt.
async fn control_forge(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let Some((url, body)) = sb
        .lock()
        .notifications
        .get(index)
        .map(|n| (n.url.clone(), n.body.clone()))
    else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let mut headers = sb.signature_headers(mode, body.as_bytes(), false);
    headers.push(("content-type".into(), "application/json".into()));
    let forged = body.replacen("\"id\":\"", "\"id\":\"X", 1);
    let request = HttpRequest {
        method: HttpMethod::Post,
        url,
        headers,
        body: forged.into_bytes(),
    };
    let status = match sb.client.send(&request).await {
        Ok(response) => response.status,
        Err(_) => 0,
    };
    axum::Json(json!({"acknowledged": status == 200 || status == 204})).into_response()
}

/// The order a Native `code_url` (`weixin://wxpay/bizpayurl?pr={prepay_id}`) belongs to.
fn order_by_code(sb: &WechatSandbox, code: &str) -> Option<Order> {
    let prepay_id = code.strip_prefix("weixin://wxpay/bizpayurl?pr=")?;
    sb.lock()
        .orders
        .values()
        .find(|o| o.prepay_id == prepay_id && o.trade_type == "NATIVE")
        .cloned()
}

/// `GET /sandbox/wallet?code=`: the phone scanned a Native QR code.
async fn wallet_scan(State(sb): State<Shared>, Query(scan): Query<super::WalletScan>) -> Response {
    match order_by_code(&sb, &scan.code) {
        Some(order) => super::wallet_page(
            "微信支付 WeChat Pay",
            &order.description,
            order.total,
            &scan.code,
        ),
        None => (StatusCode::NOT_FOUND, "unknown QR code").into_response(),
    }
}

/// `POST /sandbox/wallet`: the shopper confirmed; pay and notify.
async fn wallet_pay(
    State(sb): State<Shared>,
    axum::Form(scan): axum::Form<super::WalletScan>,
) -> Response {
    let Some(order) = order_by_code(&sb, &scan.code) else {
        return (StatusCode::NOT_FOUND, "unknown QR code").into_response();
    };
    let control = ControlOrder {
        out_trade_no: order.out_trade_no,
        mchid: Some(order.mchid),
        notify: true,
    };
    super::wallet_paid(sb.pay(&control))
}

#[derive(Debug, Deserialize)]
struct H5Query {
    prepay_id: String,
}

/// The H5 cashier a shopper's mobile browser lands on.
async fn h5_page(State(sb): State<Shared>, Query(query): Query<H5Query>) -> Response {
    let found = sb
        .lock()
        .orders
        .values()
        .find(|o| o.prepay_id == query.prepay_id)
        .cloned();
    let Some(order) = found else {
        return (StatusCode::NOT_FOUND, "unknown prepay_id").into_response();
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>WeChat Pay sandbox</title><h1>WeChat Pay sandbox</h1><p>{} — ¥{}.{:02}</p>\
         <form method=post action=\"/sandbox/h5/pay\"><input type=hidden name=out_trade_no value=\"{}\">\
         <input type=hidden name=mchid value=\"{}\"><button type=submit>Pay</button></form>",
        html_escape(&order.description),
        order.total / 100,
        order.total % 100,
        html_escape(&order.out_trade_no),
        html_escape(&order.mchid)
    ))
    .into_response()
}

async fn h5_pay(State(sb): State<Shared>, axum::Form(order): axum::Form<ControlOrder>) -> Response {
    match sb.pay(&order) {
        Ok(_) => Html("<!doctype html><meta charset=utf-8><p>Paid.</p>").into_response(),
        Err((status, message)) => (status, message).into_response(),
    }
}

/// v2 `/pay/micropay`: the cashier scanned a WeChat payment code.
///
/// Sandbox choices: a code ending in `0000` needs the shopper's password (`USERPAYING`; pay
/// it with `/sandbox/pay`), one ending in `9999` has no funds (`NOTENOUGH`), any other valid
/// code pays at once. Only `HMAC-SHA256` signs are accepted.
async fn micropay(State(sb): State<Shared>, body: Bytes) -> Response {
    let xml = |fields: &BTreeMap<String, String>| {
        let mut response = (
            StatusCode::OK,
            sign::v2_xml(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        response
    };
    let comm_fail = |message: &str| {
        let mut fields = BTreeMap::new();
        fields.insert("return_code".to_owned(), "FAIL".to_owned());
        fields.insert("return_msg".to_owned(), message.to_owned());
        xml(&fields)
    };
    sb.lock().calls += 1;
    let Ok(fields) = sign::parse_v2_xml(&body).ok_or(()) else {
        return comm_fail("XML格式错误");
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let Some(merchant) = sb.merchants.get(get("mch_id")) else {
        return comm_fail("商户号mch_id与appid不匹配");
    };
    let Some(key) = merchant.settings.api_v2_key.as_deref() else {
        return comm_fail("商户未开通付款码支付");
    };
    for name in [
        "appid",
        "mch_id",
        "nonce_str",
        "sign",
        "body",
        "out_trade_no",
        "total_fee",
        "spbill_create_ip",
        "auth_code",
    ] {
        if get(name).is_empty() {
            return comm_fail(&format!("缺少参数{name}"));
        }
    }
    if get("sign_type") != "HMAC-SHA256" || !sign::v2_sign_matches(&fields, key) {
        return comm_fail("签名错误");
    }
    if !merchant.settings.appids.iter().any(|a| a == get("appid")) {
        return comm_fail("appid和mch_id不匹配");
    }
    let now = OffsetDateTime::now_utc();
    let mut reply = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        reply.insert(k.to_owned(), v);
    };
    put("return_code", "SUCCESS".into());
    put("return_msg", "OK".into());
    put("appid", get("appid").into());
    put("mch_id", get("mch_id").into());
    put("nonce_str", random_alnum(16));
    let outcome: Result<Order, (&str, &str)> = (|| {
        let total: i64 = get("total_fee")
            .parse()
            .ok()
            .filter(|t| *t >= 1)
            .ok_or(("PARAM_ERROR", "total_fee 须为正整数"))?;
        if !valid_order_no(get("out_trade_no")) {
            return Err(("PARAM_ERROR", "out_trade_no 格式错误"));
        }
        let code = get("auth_code");
        if !is_wechat_code(code) {
            return Err(("AUTH_CODE_INVALID", "付款码无效，请重新扫码"));
        }
        let mut inner = sb.lock();
        inner.counter += 1;
        let number = inner.counter;
        let key = (get("mch_id").to_owned(), get("out_trade_no").to_owned());
        if let Some(existing) = inner.orders.get(&key) {
            return match existing.state {
                TradeState::Success | TradeState::Refund => Err(("ORDERPAID", "订单已支付")),
                TradeState::Closed => Err(("ORDERCLOSED", "订单已关闭")),
                TradeState::UserPaying => Err(("USERPAYING", "需要用户输入支付密码")),
                TradeState::PayError | TradeState::NotPay => {
                    Err(("OUT_TRADE_NO_USED", "商户订单号重复"))
                }
            };
        }
        let state = if code.ends_with("0000") {
            TradeState::UserPaying
        } else if code.ends_with("9999") {
            TradeState::PayError
        } else {
            TradeState::Success
        };
        let order = Order {
            mchid: key.0.clone(),
            appid: get("appid").to_owned(),
            out_trade_no: key.1.clone(),
            trade_type: "MICROPAY",
            description: get("body").to_owned(),
            total,
            notify_url: None,
            expires_at: now + time::Duration::minutes(5),
            state,
            transaction_id: (state == TradeState::Success)
                .then(|| format!("4200{}{:014}", now.unix_timestamp(), number)),
            paid_at: (state == TradeState::Success).then_some(now),
            openid: format!("oSandbox{}", random_alnum(20)),
            prepay_id: String::new(),
            fingerprint: String::new(),
            refunds: Vec::new(),
        };
        inner.orders.insert(key, order.clone());
        match state {
            TradeState::UserPaying => Err(("USERPAYING", "需要用户输入支付密码")),
            TradeState::PayError => Err(("NOTENOUGH", "余额不足")),
            _ => Ok(order),
        }
    })();
    match outcome {
        Ok(order) => {
            put("result_code", "SUCCESS".into());
            put("openid", order.openid.clone());
            put("is_subscribe", "N".into());
            put("trade_type", "MICROPAY".into());
            put("bank_type", "OTHERS".into());
            put("fee_type", "CNY".into());
            put("total_fee", order.total.to_string());
            put("cash_fee", order.total.to_string());
            put(
                "transaction_id",
                order.transaction_id.clone().unwrap_or_default(),
            );
            put("out_trade_no", order.out_trade_no.clone());
            let beijing =
                now.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
            put(
                "time_end",
                beijing
                    .format(time::macros::format_description!(
                        "[year][month][day][hour][minute][second]"
                    ))
                    .unwrap_or_default(),
            );
        }
        Err((code, message)) => {
            put("result_code", "FAIL".into());
            put("err_code", code.into());
            put("err_code_des", message.into());
        }
    }
    let sign = sign::v2_sign(&reply, key);
    reply.insert("sign".into(), sign);
    xml(&reply)
}

/// Bill downloads stay valid for 5 minutes (B.7).
const BILL_LINK_SECS: i64 = 300;

impl WechatSandbox {
    /// The lines of one merchant's `ALL` bill for a Beijing day: payments that succeeded and
    /// refunds that completed on it, in time order.
    fn bill_entries(&self, mchid: &str, day: time::Date) -> Vec<statements::WechatBillEntry> {
        let inner = self.lock();
        let mut entries = Vec::new();
        for order in inner.orders.values().filter(|o| o.mchid == mchid) {
            let (Some(paid_at), Some(transaction_id)) = (order.paid_at, &order.transaction_id)
            else {
                continue;
            };
            let entry = |at, refund, amount| statements::WechatBillEntry {
                at,
                appid: order.appid.clone(),
                mchid: order.mchid.clone(),
                transaction_id: transaction_id.clone(),
                out_trade_no: order.out_trade_no.clone(),
                openid: order.openid.clone(),
                trade_type: order.trade_type.to_owned(),
                refund,
                amount,
                fee_e5: statements::wechat_fee_e5(amount),
                description: order.description.clone(),
                currency: "CNY".to_owned(),
            };
            if moongate_contract::statement::beijing_day(paid_at) == day {
                entries.push(entry(paid_at, None, order.total));
            }
            for refund in &order.refunds {
                if let Some(at) = refund.success_at
                    && refund.status == "SUCCESS"
                    && moongate_contract::statement::beijing_day(at) == day
                {
                    entries.push(entry(
                        at,
                        Some((refund.refund_id.clone(), refund.out_refund_no.clone())),
                        refund.amount,
                    ));
                }
            }
        }
        entries.sort_by_key(|e| e.at);
        entries
    }

    /// `GET /v3/bill/tradebill`: `ALL` bills of days before today (Beijing), ready from 10:00
    /// the next day (`STATEMENT_CREATING` before), `NO_STATEMENT_EXIST` for a day without
    /// trades, `INVALID_REQUEST` for today or later.
    fn trade_bill(
        &self,
        merchant: &Merchant,
        query: &HashMap<String, String>,
        host: &str,
    ) -> Result<Reply, Reply> {
        let day = query
            .get("bill_date")
            .and_then(|d| moongate_contract::statement::parse_day(d))
            .ok_or_else(|| {
                fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "参数错误，请检查bill_date",
                )
            })?;
        match query.get("bill_type").map(String::as_str) {
            None | Some("ALL") => {}
            Some(
                "SUCCESS" | "REFUND" | "RECHARGE_REFUND" | "ALL_SPECIAL" | "SUC_SPECIAL"
                | "REF_SPECIAL",
            ) => {
                // Sandbox choice: only the ALL bill is simulated.
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "沙箱仅支持 bill_type=ALL",
                ));
            }
            Some(_) => return Err(param_error("bill_type 取值错误")),
        }
        if query.contains_key("tar_type")
            && query.get("tar_type").map(String::as_str) != Some("GZIP")
        {
            return Err(param_error("tar_type 取值错误"));
        }
        if query.contains_key("tar_type") {
            // Sandbox choice: the uncompressed bill only (Moongate never asks for GZIP).
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "沙箱不支持 tar_type",
            ));
        }
        let now = OffsetDateTime::now_utc();
        let (today, after_ten) = self.lock().bills.today(now);
        if day >= today {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "参数错误，请检查bill_date",
            ));
        }
        let mchid = &merchant.settings.mchid;
        let entries = self.bill_entries(mchid, day);
        if entries.is_empty() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "NO_STATEMENT_EXIST",
                "账单文件不存在",
            ));
        }
        if today.previous_day() == Some(day) && !after_ten {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "STATEMENT_CREATING",
                "账单生成中",
            ));
        }
        let mut bytes = Vec::new();
        statements::write_wechat_trade_bill(&mut bytes, entries).map_err(|_| {
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SYSTEM_ERROR",
                "系统错误",
            )
        })?;
        let hash = statements::sha1_hex(&bytes);
        let token = random_alnum(32);
        self.lock().bills.issue(
            token.clone(),
            statements::IssuedBill {
                at: now,
                label: mchid.clone(),
                bytes,
            },
            BILL_LINK_SECS,
        );
        Ok(ok(json!({
            "hash_type": "SHA1",
            "hash_value": hash,
            "download_url": format!("http://{host}/v3/billdownload/file?token={token}"),
        })))
    }

    /// `GET /v3/billdownload/file?token=…` (signed request, unsigned answer).
    fn bill_file(&self, mchid: &str, query: &str) -> Response {
        let token = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let found = self
            .lock()
            .bills
            .fetch(&token, now, BILL_LINK_SECS, |bill| bill.label == mchid);
        match found {
            Some(bill) => {
                let mut response = (StatusCode::OK, bill.bytes).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
            }
            _ => (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"code": "RESOURCE_NOT_EXISTS", "message": "账单下载链接已失效"})),
            )
                .into_response(),
        }
    }
}

async fn control_statement_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<statements::StatementClock>,
) -> Response {
    match clock.day() {
        Ok(day) => {
            sb.lock().bills.set_clock(day, clock.tamper_next);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// WeChat Pay's published payment-code shape (china-wallets.md section E): 18 digits starting
/// 10-15. Written here from the rule, not taken from the adapter.
fn is_wechat_code(code: &str) -> bool {
    code.len() == 18
        && code.bytes().all(|b| b.is_ascii_digit())
        && code
            .get(..2)
            .and_then(|p| p.parse::<u8>().ok())
            .is_some_and(|p| (10..=15).contains(&p))
}
