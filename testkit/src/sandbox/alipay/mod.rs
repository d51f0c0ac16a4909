//! A strict local re-implementation of the Alipay classic gateway (china-wallets.md section F).
//!
//! It verifies RSA2 request signatures over the union of query and form parameters (duplicates
//! refused), answers with Alipay's own codes (`40001`, `40002 isv.invalid-signature` quoting the
//! HTML-escaped sign string, `40004 ACQ.*`), emits compact JSON with the response node first,
//! `/` escaped as `\/` and the node bytes signed with its own key, keeps trade state (a QR order
//! becomes a trade only when "scanned"), refunds idempotently by `out_request_no`, and sends
//! V1-signed form notifications retried on Alipay's schedule until the reply is exactly
//! `success`. Control endpoints under `/sandbox/` play the shopper and inject faults.
//!
//! Certificate mode (china-wallets.md A.9): an app registered with a certificate must send the
//! SN Alipay knows for it (`app_cert_sn`, else `40002 isv.app-cert-not-exist`) and the root
//! bundle's SN (`alipay_root_cert_sn`, else `40002 isv.invalid-alipay-root-cert-sn`); its
//! answers name the Alipay certificate that signed them (`alipay_cert_sn`) and are signed with
//! that certificate's key, and `/sandbox/rotate-certificate` moves Alipay to its next
//! certificate. The SNs are data (`fixtures/alipay/certs/sandbox/sns.txt`, computed by Python),
//! never computed here.
//!
//! Choices where Alipay's behaviour is not published are marked "sandbox choice".

mod auth;
mod bills;
mod buyer;
mod control;
mod gateway;
mod notify;
use auth::*;
use bills::*;
use buyer::*;
use control::*;
use gateway::*;
use notify::*;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::alipay::{
    FORM_CONTENT_TYPE, Signed, beijing_time, parse_beijing_time, sign_string,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{Currency, HttpMethod, HttpRequest, Money};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::{FaultBody, FaultMode, Faults, control_reply, html_escape, statements, with_faults};
use crate::net::HttpClient;

/// Alipay's retry schedule after the first attempt: 4m, 10m, 10m, 1h, 2h, 6h, 15h (A.8).
const NOTIFY_SCHEDULE_SECS: [u64; 7] = [240, 600, 600, 3600, 7200, 21_600, 54_000];

/// Accepted request clock skew (sandbox choice: Alipay does not publish its window).
const TIMESTAMP_WINDOW_SECS: i64 = 15 * 60;

const BILL_METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// Bill download links expire after 30 seconds (A.11).
const BILL_LINK_SECS: i64 = 30;

/// How the sandbox is set up.
#[derive(Debug)]
pub struct SandboxSettings {
    /// The sandbox's own private key (PEM): it signs responses and notifications with it.
    pub private_key_pem: String,
    /// Registered applications: `app_id` → the app's public key (PEM).
    pub apps: Vec<(String, String)>,
    /// Divides the notification retry schedule (1 = Alipay's real timing).
    pub time_divisor: u32,
    /// Seller PID reported in notifications.
    pub seller_id: String,
    /// Apps registered in certificate mode, when there are any.
    pub certificate_mode: Option<CertificateMode>,
    /// Merchants' authorisations of ISV apps: `app_auth_token`, the ISV's `app_id`, the
    /// merchant's app id (`auth_app_id`).
    pub authorisations: Vec<(String, String, String)>,
    /// Apps' user authorisation callback domains (授权回调地址): `app_id`, a host (`host` or
    /// `host:port`) its `redirect_uri` may name.
    pub callback_domains: Vec<(String, String)>,
}

/// What Alipay knows in certificate mode.
#[derive(Debug)]
pub struct CertificateMode {
    /// The `alipay_root_cert_sn` requests must carry.
    pub root_cert_sn: String,
    /// Alipay's public-key certificates, current first: SN and the certificate's private key
    /// (PEM). `/sandbox/rotate-certificate` moves to the next.
    pub alipay_certificates: Vec<(String, String)>,
    /// The apps: `app_id`, the SN of the certificate Alipay issued for it, its public key (PEM).
    pub apps: Vec<(String, String, String)>,
}

/// A registered app: the key its requests verify with, and in certificate mode its SN.
#[derive(Debug)]
struct App {
    verifier: RsaVerifier,
    app_cert_sn: Option<String>,
}

/// Who signs an answer to one app: the sandbox's key in public-key mode, the current Alipay
/// certificate's in certificate mode (named in the answer).
pub(super) struct Signing<'a> {
    signer: &'a RsaSigner,
    cert_sn: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TradeStatus {
    WaitBuyerPay,
    Success,
    Closed,
}

impl TradeStatus {
    fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::Success => "TRADE_SUCCESS",
            TradeStatus::Closed => "TRADE_CLOSED",
        }
    }
}

#[derive(Clone, Debug)]
struct Order {
    /// The app that called: the merchant's own, or its ISV's.
    app_id: String,
    /// The merchant's app (`auth_app_id`): `app_id` unless an ISV called for it.
    auth_app_id: String,
    out_trade_no: String,
    total: i64,
    subject: String,
    notify_url: Option<String>,
    return_url: Option<String>,
    qr_code: String,
    expires_at: OffsetDateTime,
    created_at: OffsetDateTime,
    trade: Option<Trade>,
    /// A JSAPI trade's buyer (`buyer_id` or `buyer_open_id` under `auth_app_id`).
    buyer: Option<String>,
}

#[derive(Clone, Debug)]
struct Trade {
    trade_no: String,
    status: TradeStatus,
    paid_at: Option<OffsetDateTime>,
    /// (`out_request_no`, amount, when).
    refunds: Vec<(String, i64, OffsetDateTime)>,
}

impl Trade {
    fn refunded(&self) -> i64 {
        self.refunds.iter().map(|(_, amount, _)| amount).sum()
    }
}

/// One notification and its delivery attempts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SentNotification {
    /// Stable across retries.
    pub notify_id: String,
    /// The order.
    pub out_trade_no: String,
    /// Where it goes (the order's `notify_url`).
    pub url: String,
    /// Form body as sent.
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// True once the reply was exactly `success`.
    pub acknowledged: bool,
}

#[derive(Debug)]
struct Inner {
    orders: HashMap<(String, String), Order>,
    /// Issued bill download links (labelled with the zip's file name) and the statement clock.
    bills: statements::BillDesk,
    fault: Faults,
    notifications: Vec<SentNotification>,
    counter: u64,
    calls: u64,
    /// Index of Alipay's current certificate (certificate mode).
    current_certificate: usize,
    /// Merchants' authorisations of ISV apps, and codes waiting for their exchange.
    grants: Grants,
    /// Shoppers' user authorisation codes.
    user_codes: UserCodes,
    /// Payers an app has learned (app, buyer id), the only ones its JSAPI trades may name.
    payers: std::collections::HashSet<(String, String)>,
}

/// Shared sandbox state.
#[derive(Debug)]
pub struct Sandbox {
    signer: RsaSigner,
    apps: HashMap<String, App>,
    /// Certificate mode: the root SN and Alipay's certificates (SN, key), current first.
    root_cert_sn: Option<String>,
    certificates: Vec<(String, RsaSigner)>,
    seller_id: String,
    time_divisor: u32,
    /// `app_id` → its user authorisation callback domains.
    callback_domains: HashMap<String, Vec<String>>,
    client: HttpClient,
    /// Added to the clock requests' `timestamp` is checked against (`/sandbox/clock`).
    clock_skew: super::ClockSkew,
    inner: Mutex<Inner>,
}

type Shared = Arc<Sandbox>;

/// Errors starting the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A key did not load.
    #[error("key: {0}")]
    Key(String),
    /// Network.
    #[error("{0}")]
    Io(String),
}

impl Sandbox {
    /// Builds the state.
    pub fn new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let signer = RsaSigner::from_pem(&settings.private_key_pem)
            .map_err(|e| SandboxError::Key(format!("sandbox private key: {e}")))?;
        let mut apps = HashMap::new();
        let verifier = |app_id: &str, pem: &str| {
            RsaVerifier::from_pem(pem)
                .map_err(|e| SandboxError::Key(format!("public key of app {app_id}: {e}")))
        };
        for (app_id, pem) in settings.apps {
            let verifier = verifier(&app_id, &pem)?;
            apps.insert(
                app_id,
                App {
                    verifier,
                    app_cert_sn: None,
                },
            );
        }
        let mut root_cert_sn = None;
        let mut certificates = Vec::new();
        if let Some(mode) = settings.certificate_mode {
            for (app_id, app_cert_sn, pem) in mode.apps {
                let verifier = verifier(&app_id, &pem)?;
                apps.insert(
                    app_id,
                    App {
                        verifier,
                        app_cert_sn: Some(app_cert_sn),
                    },
                );
            }
            for (sn, pem) in mode.alipay_certificates {
                let signer = RsaSigner::from_pem(&pem)
                    .map_err(|e| SandboxError::Key(format!("Alipay certificate {sn}: {e}")))?;
                certificates.push((sn, signer));
            }
            if certificates.is_empty() {
                return Err(SandboxError::Key(
                    "certificate mode needs at least one Alipay certificate".to_owned(),
                ));
            }
            root_cert_sn = Some(mode.root_cert_sn);
        }
        let client = HttpClient::new(Duration::from_secs(3), Duration::from_secs(10))
            .map_err(SandboxError::Io)?;
        let mut callback_domains: HashMap<String, Vec<String>> = HashMap::new();
        for (app_id, domain) in settings.callback_domains {
            callback_domains.entry(app_id).or_default().push(domain);
        }
        Ok(Sandbox {
            signer,
            apps,
            root_cert_sn,
            certificates,
            seller_id: settings.seller_id,
            time_divisor: settings.time_divisor.max(1),
            callback_domains,
            client,
            clock_skew: super::ClockSkew::default(),
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                bills: statements::BillDesk::default(),
                fault: Faults::none(),
                notifications: Vec::new(),
                counter: 0,
                calls: 0,
                current_certificate: 0,
                grants: Grants::configured(settings.authorisations),
                user_codes: UserCodes::default(),
                payers: std::collections::HashSet::new(),
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
                paid: o.trade.as_ref().is_some_and(|t| t.paid_at.is_some()),
                refunds: o
                    .trade
                    .as_ref()
                    .map(|t| {
                        t.refunds
                            .iter()
                            .map(|(no, amount, _)| (no.clone(), *amount))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked mid-update; the sandbox keeps going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_number(&self, prefix: &str) -> String {
        let mut inner = self.lock();
        inner.counter += 1;
        let now = OffsetDateTime::now_utc();
        format!("{prefix}{}{:010}", now.unix_timestamp(), inner.counter)
    }

    /// How the buyer is named to `app_id`: apps in certificate mode stand for the apps created
    /// since Alipay's OpenID migration, which get `buyer_open_id` instead of the `2088…`
    /// `buyer_id` / `buyer_user_id` (sandbox choice: which apps are migrated).
    pub(super) fn buyer_field(
        &self,
        app_id: &str,
        user_field: &'static str,
    ) -> (&'static str, &'static str) {
        if self.migrated(app_id) {
            (
                "buyer_open_id",
                "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5",
            )
        } else {
            (user_field, "2088102177846875")
        }
    }

    /// Who signs for `app_id` (an unknown app gets the public-key mode signature).
    pub(super) fn signing(&self, app_id: Option<&str>) -> Signing<'_> {
        let in_certificate_mode = app_id
            .and_then(|id| self.apps.get(id))
            .is_some_and(|app| app.app_cert_sn.is_some());
        let current = self.lock().current_certificate;
        match self.certificates.get(current) {
            Some((sn, signer)) if in_certificate_mode => Signing {
                signer,
                cert_sn: Some(sn),
            },
            _ => Signing {
                signer: &self.signer,
                cert_sn: None,
            },
        }
    }

    /// What is wrong with a request's certificate SNs for `app`, as Alipay answers it.
    fn certificate_problem(
        &self,
        app: &App,
        app_cert_sn: Option<&str>,
        root_cert_sn: Option<&str>,
    ) -> Option<Value> {
        let app_cert_not_exist = || {
            err(
                "40002",
                "Invalid Arguments",
                "isv.app-cert-not-exist",
                "应用公钥证书不存在",
            )
        };
        match (&app.app_cert_sn, app_cert_sn) {
            // Public-key mode, as the app is registered.
            (None, None) => None,
            // Sandbox choice: an app without a certificate has none of that SN.
            (None, Some(_)) => Some(app_cert_not_exist()),
            // Certificate mode without the SN: Alipay holds no public key to check the
            // signature with.
            (Some(_), None) => Some(err(
                "40003",
                "Insufficient Conditions",
                "isv.missing-signature-config",
                "验签出错, 未配置对应签名算法的公钥或者证书",
            )),
            (Some(ours), Some(theirs)) if ours != theirs => Some(app_cert_not_exist()),
            (Some(_), Some(_)) if root_cert_sn != self.root_cert_sn.as_deref() => Some(err(
                "40002",
                "Invalid Arguments",
                "isv.invalid-alipay-root-cert-sn",
                "无效支付宝根证书序列号",
            )),
            (Some(_), Some(_)) => None,
        }
    }

    /// Moves Alipay to its next certificate; returns its SN.
    pub(super) fn rotate_certificate(&self) -> Option<String> {
        let mut inner = self.lock();
        let next = inner.current_certificate + 1;
        let (sn, _) = self.certificates.get(next)?;
        inner.current_certificate = next;
        Some(sn.clone())
    }

    /// Signs and renders a response: compact JSON, node first, `/` escaped, then
    /// `alipay_cert_sn` in certificate mode, `sign` last.
    fn respond(
        &self,
        signing: &Signing<'_>,
        node_name: &str,
        node: &Value,
        corrupt: bool,
    ) -> Response {
        let node_text = node.to_string().replace('/', "\\/");
        let signed = if corrupt {
            format!("{node_text} ")
        } else {
            node_text.clone()
        };
        let sign = signing
            .signer
            .sign_base64(signed.as_bytes())
            .unwrap_or_default();
        let cert_sn = signing
            .cert_sn
            .map(|sn| format!(",\"alipay_cert_sn\":\"{sn}\""))
            .unwrap_or_default();
        let body = format!("{{\"{node_name}\":{node_text}{cert_sn},\"sign\":\"{sign}\"}}");
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=utf-8"),
        );
        response
    }
}

fn yuan(fen: i64) -> String {
    Money::new(fen, Currency::CNY).to_decimal_string()
}

/// Strict two-decimal yuan in Alipay's range.
fn parse_amount(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.')?;
    if fraction.len() != 2 || whole.is_empty() || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    let fen = Money::parse_decimal(text, Currency::CNY).ok()?.minor;
    (1..=10_000_000_000).contains(&fen).then_some(fen)
}

fn parse_timeout_express(text: &str) -> Option<time::Duration> {
    let unit = text.chars().last()?;
    let digits = text.get(..text.len().checked_sub(1)?)?;
    let value: i64 = digits.parse().ok()?;
    let minutes = match unit {
        'm' => value,
        'h' => value.checked_mul(60)?,
        'd' => value.checked_mul(1440)?,
        _ => return None,
    };
    (1..=21_600)
        .contains(&minutes)
        .then(|| time::Duration::minutes(minutes))
}

fn node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

fn err(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Value {
    json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})
}

fn business(sub_code: &str, sub_msg: &str) -> Value {
    err("40004", "Business Failed", sub_code, sub_msg)
}

/// The router: `/gateway.do` plus `/sandbox/*` controls.
pub fn router(sandbox: Shared) -> Router {
    Router::new()
        .route("/gateway.do", any(gateway_do))
        .route(
            "/oauth2/appToAppAuth.htm",
            get(app_to_app_auth_page).post(app_to_app_auth_consent),
        )
        .route("/oauth2/publicAppAuthorize.htm", get(public_app_authorize))
        .route("/sandbox/tradepay", get(trade_pay_sheet))
        .route("/sandbox/revoke-authorisation", post(control_revoke))
        .route("/sandbox/pay", post(control_pay))
        .route("/sandbox/forge", post(control_forge))
        .route("/sandbox/scan", post(control_scan))
        .route("/sandbox/fault", post(control_fault))
        .route("/sandbox/clock", post(control_clock))
        .route(
            "/sandbox/rotate-certificate",
            post(control_rotate_certificate),
        )
        .route("/sandbox/stats", get(control_stats))
        .route("/sandbox/notifications", get(control_notifications))
        .route("/sandbox/resend", post(control_resend))
        .route("/sandbox/cashier/pay", post(cashier_pay))
        .route("/sandbox/wallet", get(wallet_scan).post(wallet_pay))
        .route("/sandbox/statement-clock", post(control_statement_clock))
        .route("/downloadBillFile.resource", get(download_bill))
        .with_state(sandbox)
}

/// Starts the sandbox on a bound listener.
pub async fn start_on(
    settings: SandboxSettings,
    listener: TcpListener,
) -> Result<(Arc<Sandbox>, tokio::task::JoinHandle<()>), SandboxError> {
    let sandbox = Arc::new(Sandbox::new(settings)?);
    let task = super::serve(listener, router(Arc::clone(&sandbox)));
    Ok((sandbox, task))
}
