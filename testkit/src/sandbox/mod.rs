//! Strict local re-implementations of the providers (china-wallets.md section F): they verify
//! what the real provider verifies, answer in its own codes and sign what it signs, so the
//! adapters are exercised against the protocol rather than against our own convenience.
//!
//! - [`alipay`]: the classic `gateway.do` gateway;
//! - [`wechat`]: WeChat Pay API v3 (both key modes) and v2 `micropay`;
//! - [`unionpay`]: UnionPay's online gateway (ACP 5.1.0), QR apply, payment codes, queries.
//!
//! Each has control endpoints under `/sandbox/` that play the shopper and inject faults.

pub mod alipay;
pub mod standard;
pub mod statements;
pub mod unionpay;
pub mod wechat;

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

pub use alipay::{Sandbox, SandboxError, SandboxSettings, SentNotification, start_on};

/// A fault to inject into the next provider calls (`POST /sandbox/fault`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Behave.
    None,
    /// Answer 200 with an HTML page.
    Garbage,
    /// Answer HTTP 500.
    #[serde(rename = "http_500")]
    Http500,
    /// Never answer (until the caller gives up).
    Timeout,
    /// Sign the response with the wrong bytes.
    BadSignature,
    /// Answer normally, after `delay_ms`.
    Slow,
    /// Act on the request (create the order, refund, …), then never answer: the caller times
    /// out although the provider did the work.
    DropAfterCreate,
}

/// The body of `POST /sandbox/fault`: a mode and how many calls it hits (default 1).
#[derive(Debug, Deserialize)]
pub(crate) struct FaultBody {
    mode: FaultMode,
    #[serde(default = "one")]
    count: u32,
    /// For `slow`: the delay, milliseconds (default 1000).
    #[serde(default)]
    delay_ms: Option<u64>,
}

fn one() -> u32 {
    1
}

/// How far a sandbox's clock is off the system's (`POST /sandbox/clock {"skew_secs": n}`):
/// a provider whose clock differs from ours, or one that agrees with a gateway whose clock a
/// test stepped.
#[derive(Debug, Default)]
pub(crate) struct ClockSkew(std::sync::atomic::AtomicI64);

/// The body of `POST /sandbox/clock`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ClockBody {
    pub(crate) skew_secs: i64,
}

impl ClockSkew {
    /// Sets the skew.
    pub(crate) fn set(&self, body: &ClockBody) {
        self.0
            .store(body.skew_secs, std::sync::atomic::Ordering::SeqCst);
    }

    /// The skew in seconds.
    pub(crate) fn secs(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The sandbox's time now.
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::seconds(self.secs())
    }
}

/// The fault armed in a sandbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    mode: FaultMode,
    remaining: u32,
    delay: Duration,
}

/// The fault of one call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fault {
    /// Which.
    pub(crate) mode: FaultMode,
    delay: Duration,
}

impl Faults {
    /// Nothing armed.
    pub(crate) fn none() -> Faults {
        Faults {
            mode: FaultMode::None,
            remaining: 0,
            delay: Duration::ZERO,
        }
    }

    /// Arms a fault for the next `count` calls.
    pub(crate) fn arm(&mut self, body: &FaultBody) {
        self.mode = body.mode;
        self.remaining = body.count;
        self.delay = Duration::from_millis(body.delay_ms.unwrap_or(1_000));
    }

    /// The fault for this call, counting it down.
    pub(crate) fn take(&mut self) -> Fault {
        if self.remaining == 0 {
            return Fault {
                mode: FaultMode::None,
                delay: Duration::ZERO,
            };
        }
        self.remaining -= 1;
        Fault {
            mode: self.mode,
            delay: self.delay,
        }
    }
}

/// Runs a provider call's handler under its fault: garbage, 500 and timeout replace the
/// answer before anything happens; `slow` delays it; `drop_after_create` lets the handler act
/// and then never answers; `bad_signature` is the handler's own business.
pub(crate) async fn with_faults(
    fault: Fault,
    handle: impl std::future::Future<Output = Response>,
) -> Response {
    match fault.mode {
        FaultMode::Garbage => {
            return (
                StatusCode::OK,
                Html("<html><body>502 Bad Gateway</body></html>"),
            )
                .into_response();
        }
        FaultMode::Http500 => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
        }
        FaultMode::Timeout => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        FaultMode::Slow => tokio::time::sleep(fault.delay).await,
        FaultMode::None | FaultMode::BadSignature | FaultMode::DropAfterCreate => {}
    }
    let response = handle.await;
    if fault.mode == FaultMode::DropAfterCreate {
        tokio::time::sleep(Duration::from_secs(120)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    response
}

/// Serves a sandbox's router on a bound listener until it fails.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "sandbox stopped");
        }
    })
}

/// The JSON answer of a control endpoint.
pub(crate) fn control_reply(result: Result<Value, (StatusCode, String)>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err((status, message)) => (status, axum::Json(json!({"error": message}))).into_response(),
    }
}

pub(crate) use crate::text::escape as html_escape;

/// The code a sandbox wallet page is asked to "scan".
#[derive(Debug, Deserialize)]
pub(crate) struct WalletScan {
    pub(crate) code: String,
}

/// A sandbox wallet's confirmation page: what a shopper's phone shows after scanning a QR
/// code (the order and a pay button). Stands in for the phone in the demo and browser tests.
pub(crate) fn wallet_page(wallet: &str, subject: &str, fen: i64, code: &str) -> Response {
    let amount = moongate_contract::Money::new(fen, moongate_contract::Currency::CNY);
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>{wallet} sandbox wallet</title><h1>{wallet} · sandbox wallet</h1>\
         <p>This local sandbox stands in for the shopper's phone: it scanned the code.</p>\
         <p id=order>{} — ¥{}</p><form method=post action=\"/sandbox/wallet\">\
         <input type=hidden name=code value=\"{}\"><button id=pay type=submit>确认付款 Pay ¥{}</button></form>",
        html_escape(subject),
        amount.to_decimal_string(),
        html_escape(code),
        amount.to_decimal_string(),
    ))
    .into_response()
}

/// A one-line page of a provider's (a refusal, or "open this in the app").
pub(crate) fn notice_page(title: &str, status: StatusCode, text: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>{}</title><p>{}</p>",
            html_escape(title),
            html_escape(text)
        )),
    )
        .into_response()
}

/// `host` or `host:port` of `url`, as an app's registered domains name it.
pub(crate) fn host_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let host = url.host_str()?.to_owned();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

/// A `302` to `redirect` with `pairs` added to its query, as an OAuth page sends the browser
/// back.
pub(crate) fn redirect_back(redirect: &str, pairs: &[(&str, &str)]) -> Response {
    let mut back = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        back.append_pair(key, value);
    }
    let separator = if redirect.contains('?') { '&' } else { '?' };
    let location = format!("{redirect}{separator}{}", back.finish());
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&location) {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, value);
    }
    response
}

/// The wallet's answer once paid (or why not).
pub(crate) fn wallet_paid(result: Result<Value, (StatusCode, String)>) -> Response {
    match result {
        Ok(_) => Html(
            "<!doctype html><meta charset=utf-8><title>Paid</title>\
             <p id=paid>支付成功 · Paid. Go back to the checkout page: it updates by itself.</p>",
        )
        .into_response(),
        Err((status, message)) => (status, message).into_response(),
    }
}

/// One order as a sandbox holds it, for tests that compare the provider's truth with the
/// ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    /// The merchant order number (Moongate's payment id).
    pub out_trade_no: String,
    /// Total, fen.
    pub total: i64,
    /// True when the shopper paid (refunds included).
    pub paid: bool,
    /// Refunds: (request number, fen).
    pub refunds: Vec<(String, i64)>,
}
