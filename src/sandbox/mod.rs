//! Strict local re-implementations of the providers (china-wallets.md section F): they verify
//! what the real provider verifies, answer in its own codes and sign what it signs, so the
//! adapters are exercised against the protocol rather than against our own convenience.
//!
//! - [`alipay`]: the classic `gateway.do` gateway;
//! - [`wechat`]: WeChat Pay API v3 (both key modes) and v2 `micropay`.
//!
//! Each has control endpoints under `/sandbox/` that play the shopper and inject faults.

pub mod alipay;
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
}

/// The body of `POST /sandbox/fault`: a mode and how many calls it hits (default 1).
#[derive(Debug, Deserialize)]
pub(crate) struct FaultBody {
    mode: FaultMode,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

/// The fault armed in a sandbox.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Faults {
    mode: FaultMode,
    remaining: u32,
}

impl Faults {
    /// Nothing armed.
    pub(crate) fn none() -> Faults {
        Faults {
            mode: FaultMode::None,
            remaining: 0,
        }
    }

    /// Arms a fault for the next `count` calls.
    pub(crate) fn arm(&mut self, body: &FaultBody) {
        self.mode = body.mode;
        self.remaining = body.count;
    }

    /// The fault for this call, counting it down.
    pub(crate) fn take(&mut self) -> FaultMode {
        if self.remaining == 0 {
            return FaultMode::None;
        }
        self.remaining -= 1;
        self.mode
    }
}

/// The whole answer for faults that replace the provider's answer; `None` for the ones that
/// let the call through (none, bad signature).
pub(crate) async fn fault_response(mode: FaultMode) -> Option<Response> {
    match mode {
        FaultMode::Garbage => Some(
            (
                StatusCode::OK,
                Html("<html><body>502 Bad Gateway</body></html>"),
            )
                .into_response(),
        ),
        FaultMode::Http500 => {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response())
        }
        FaultMode::Timeout => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Some(StatusCode::GATEWAY_TIMEOUT.into_response())
        }
        FaultMode::None | FaultMode::BadSignature => None,
    }
}

/// The JSON answer of a control endpoint.
pub(crate) fn control_reply(result: Result<Value, (StatusCode, String)>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err((status, message)) => (status, axum::Json(json!({"error": message}))).into_response(),
    }
}

/// Escapes text for the sandboxes' little cashier pages.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
