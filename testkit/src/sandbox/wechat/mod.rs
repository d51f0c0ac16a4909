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
//! - Service providers (服务商): a merchant with sub-merchants bound to it places, queries,
//!   closes and refunds their orders through the `/v3/pay/partner/…` paths (and `sub_mch_id`
//!   in v2), naming the sub-merchant; a `sub_mchid` not bound to it is `403 NO_AUTH`
//!   (受理关系不存在). A provider calling without a sub-merchant, or a direct merchant naming
//!   one, is refused as WeChat refuses them (受理机构必须传入sub_mchid / 普通商户不允许传sub_mchid).
//!   Its notifications carry `sp_mchid`/`sub_mchid` and are encrypted with the provider's
//!   APIv3 key; its bills are per sub-merchant with `sub_mchid`, combined without.
//! - Orders follow `NOTPAY → SUCCESS → REFUND` and `NOTPAY → CLOSED`; payment codes add
//!   `USERPAYING` and `PAYERROR`. Required fields are checked per product; amounts are fen.
//! - Notifications are AES-256-GCM encrypted with the merchant's APIv3 key, signed, and retried
//!   on WeChat's schedule (divisible for tests) until the answer is HTTP 200 or 204. A control
//!   endpoint sends `WECHATPAY/SIGNTEST/` probes.
//!
//! Choices where WeChat's behaviour is not published are marked "sandbox choice".

mod bills;
mod control;
mod micropay;
mod notify;
mod oauth;
pub use oauth::{SandboxOfficialAccount, openid_of};
mod v3;
use bills::*;
use control::*;
use micropay::*;
use v3::*;

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
    /// Sub-merchants bound to it: a merchant with any is a service provider, which may only
    /// place orders for them.
    pub sub_merchants: Vec<SandboxSubMerchant>,
}

/// A sub-merchant (特约商户) bound to a service provider.
#[derive(Debug, Clone)]
pub struct SandboxSubMerchant {
    /// `sub_mchid`.
    pub sub_mchid: String,
    /// The sub-merchant's own app ids (`sub_appid`).
    pub appids: Vec<String>,
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
    /// Official accounts whose web OAuth the sandbox serves (`/connect/oauth2/authorize`).
    pub official_accounts: Vec<SandboxOfficialAccount>,
}

struct Merchant {
    settings: SandboxMerchant,
    verifier: RsaVerifier,
}

/// Why a call names no order owner of the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NotOwner {
    /// A service provider named no sub-merchant.
    Missing,
    /// A direct merchant named one.
    Direct,
    /// The sub-merchant is not bound to the provider.
    Unbound,
}

impl NotOwner {
    /// As v3 answers it.
    fn reply(self) -> Reply {
        match self {
            NotOwner::Missing => param_error("受理机构必须传入sub_mchid"),
            NotOwner::Direct => param_error("普通商户不允许传sub_mchid"),
            NotOwner::Unbound => fail(StatusCode::FORBIDDEN, "NO_AUTH", "受理关系不存在"),
        }
    }

    /// As v2 answers it (`return_msg`).
    fn v2_message(self) -> &'static str {
        match self {
            NotOwner::Missing => "受理机构必须传入sub_mch_id",
            NotOwner::Direct => "普通商户不允许传sub_mch_id",
            NotOwner::Unbound => "受理关系不存在",
        }
    }
}

impl Merchant {
    /// Whose order a call is about, given the sub-merchant it names: a service provider must
    /// name one bound to it, a direct merchant none.
    fn owner_of(&self, sub_mchid: Option<&str>) -> Result<&str, NotOwner> {
        let provider = !self.settings.sub_merchants.is_empty();
        match (provider, sub_mchid.filter(|s| !s.is_empty())) {
            (true, None) => Err(NotOwner::Missing),
            (false, Some(_)) => Err(NotOwner::Direct),
            (false, None) => Ok(&self.settings.mchid),
            (true, Some(sub)) => self
                .sub_merchant(sub)
                .map(|s| s.sub_mchid.as_str())
                .ok_or(NotOwner::Unbound),
        }
    }

    /// [`Merchant::owner_of`], refused as v3 answers it.
    fn owner(&self, sub_mchid: Option<&str>) -> Result<&str, Reply> {
        self.owner_of(sub_mchid).map_err(NotOwner::reply)
    }

    /// Whether `sub_appid` is an app of the sub-merchant `owner`.
    fn has_sub_appid(&self, owner: &str, sub_appid: &str) -> bool {
        self.sub_merchant(owner)
            .is_some_and(|s| s.appids.iter().any(|a| a == sub_appid))
    }

    fn sub_merchant(&self, sub_mchid: &str) -> Option<&SandboxSubMerchant> {
        self.settings
            .sub_merchants
            .iter()
            .find(|s| s.sub_mchid == sub_mchid)
    }
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

/// The sub-merchant of a service provider's order.
#[derive(Clone, Debug)]
struct OrderSub {
    sub_mchid: String,
    sub_appid: Option<String>,
    /// Whether the payer's openid is under `sub_appid` (`sub_openid`) or the provider's app.
    sub_openid: bool,
}

#[derive(Clone, Debug)]
struct Order {
    /// The merchant that placed it (the provider, for a sub-merchant's order).
    mchid: String,
    appid: String,
    sub: Option<OrderSub>,
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
    /// Whose order it is: the sub-merchant's, or the direct merchant's. Order numbers are
    /// unique per owner.
    fn owner(&self) -> &str {
        self.sub.as_ref().map_or(&self.mchid, |s| &s.sub_mchid)
    }

    /// The merchant fields of a transaction or refund notice: `appid`/`mchid`, or for a
    /// sub-merchant's order `sp_appid`/`sp_mchid`/`sub_appid`/`sub_mchid`.
    fn merchant_fields(&self, map: &mut serde_json::Map<String, Value>, with_apps: bool) {
        match &self.sub {
            None => {
                if with_apps {
                    map.insert("appid".into(), json!(self.appid));
                }
                map.insert("mchid".into(), json!(self.mchid));
            }
            Some(sub) => {
                if with_apps {
                    map.insert("sp_appid".into(), json!(self.appid));
                    if let Some(sub_appid) = &sub.sub_appid {
                        map.insert("sub_appid".into(), json!(sub_appid));
                    }
                }
                map.insert("sp_mchid".into(), json!(self.mchid));
                map.insert("sub_mchid".into(), json!(sub.sub_mchid));
            }
        }
    }

    fn payer_json(&self) -> Value {
        match &self.sub {
            None => json!({"openid": self.openid}),
            Some(sub) if sub.sub_openid => json!({"sub_openid": self.openid}),
            Some(_) => json!({"sp_openid": self.openid}),
        }
    }

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
            "out_trade_no": self.out_trade_no,
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
            self.merchant_fields(map, true);
            if state.paid() {
                map.insert("transaction_id".into(), json!(self.transaction_id));
                map.insert("bank_type".into(), json!("OTHERS"));
                map.insert(
                    "success_time".into(),
                    json!(self.paid_at.and_then(rfc3339_beijing)),
                );
                map.insert("payer".into(), self.payer_json());
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
    /// OAuth codes not yet exchanged, and those spent.
    oauth_codes: HashMap<String, oauth::Code>,
    oauth_spent: std::collections::HashSet<String>,
}

/// Shared sandbox state.
pub struct WechatSandbox {
    signer: RsaSigner,
    certificate_pem: String,
    certificate_serial: String,
    public_key_id: String,
    merchants: HashMap<String, Merchant>,
    official_accounts: HashMap<String, SandboxOfficialAccount>,
    time_divisor: u32,
    client: HttpClient,
    inner: Mutex<Inner>,
    /// Added to the timestamps the sandbox signs (`/sandbox/clock`): a provider whose clock
    /// is off.
    clock_skew: super::ClockSkew,
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
            official_accounts: settings
                .official_accounts
                .into_iter()
                .map(|a| (a.appid.clone(), a))
                .collect(),
            time_divisor: settings.time_divisor.max(1),
            client,
            clock_skew: super::ClockSkew::default(),
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                fault: Faults::none(),
                notifications: Vec::new(),
                counter: 0,
                calls: 0,
                held: None,
                bills: statements::BillDesk::default(),
                oauth_codes: HashMap::new(),
                oauth_spent: std::collections::HashSet::new(),
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
        let timestamp = self.clock_skew.now().unix_timestamp().to_string();
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
        .route("/v3/pay/partner/transactions/{product}", post(v3_entry))
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{no}",
            get(v3_entry),
        )
        .route(
            "/v3/pay/partner/transactions/out-trade-no/{no}/close",
            post(v3_entry),
        )
        .route("/v3/refund/domestic/refunds", post(v3_entry))
        .route("/v3/refund/domestic/refunds/{no}", get(v3_entry))
        .route("/v3/certificates", get(v3_entry))
        .route("/v3/bill/tradebill", get(v3_entry))
        .route("/v3/billdownload/file", get(v3_entry))
        .route("/connect/oauth2/authorize", get(oauth::authorize))
        .route("/sns/oauth2/access_token", get(oauth::access_token))
        .route("/sandbox/jsapi", get(oauth::bridge_pay))
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
        .route("/sandbox/misroute", post(control_misroute))
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
