//! The shopper's pages under `/cashier/{token}` (the token is the only credential; it is never
//! logged, and the pages tell browsers not to send it on as a referrer).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::cashier::page::{self, View};
use crate::cashier::{Browser, Checkout, State as Stage};
use crate::config::Merchant;
use crate::error::ApiError;
use crate::gateway::Gateway;
use crate::http::Shared;
use crate::http::extract::PeerAddr;
use crate::service::checkouts::{
    IDENTITY_STATE_LIFE, IdentityRefusal, Notice, choose, close_leftovers, finish_identity,
    new_token, start_identity,
};

#[derive(Debug, Deserialize)]
pub struct ChoiceForm {
    method: String,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    n: Option<String>,
    /// `done`: back from the wallet's in-app sheet.
    #[serde(default)]
    sheet: Option<String>,
}

pub(crate) fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Headers every cashier response carries: never cached, never framed, no referrer (the URL
/// is a credential), and a CSP that allows only inline styles, inline SVG and, on the JSAPI
/// page, the one script bearing this response's nonce.
pub(crate) fn page_response(
    status: StatusCode,
    html: String,
    script_nonce: Option<&str>,
) -> Response {
    let script = script_nonce
        .map(|n| format!("script-src 'nonce-{n}'"))
        .unwrap_or_else(|| "script-src 'none'".to_owned());
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; {script}; \
         base-uri 'none'; frame-ancestors 'none'"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

pub(crate) fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn not_found() -> Response {
    page_response(StatusCode::NOT_FOUND, page::not_found(), None)
}

/// A well-formed token: 43 base64url characters. Anything else is not looked up.
pub(crate) fn plausible(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The checkout a token opens, with its merchant (a merchant removed by a reload closes
/// its links).
pub(crate) async fn open(
    gw: &Gateway,
    token: &str,
) -> Result<Option<(Checkout, Arc<Merchant>)>, ApiError> {
    if !plausible(token) {
        return Ok(None);
    }
    let hash = crate::cashier::key::token_hash(token);
    let Some(checkout) = gw.store.checkout_by_token_hash(&hash).await? else {
        return Ok(None);
    };
    let merchant = gw.config().merchants.get(&checkout.merchant_id).cloned();
    Ok(merchant.map(|m| (checkout, m)))
}

/// `GET /cashier/{token}`: the page.
pub async fn cashier_page(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = gw.now();
    let Some((checkout, merchant)) = open(&gw, &token).await? else {
        return Ok(not_found());
    };
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let state = Stage::of(&checkout, &payments, now);
    close_leftovers(&gw, &state, &payments);
    let browser = Browser::detect(user_agent(&headers));
    // Inside the wallet's app, with nothing chosen yet and no notice to show: ask the wallet
    // who the payer is (once: a failed attempt comes back with a notice), so the page can
    // offer the in-app payment.
    if matches!(state, Stage::Choose { previous: None })
        && query.n.is_none()
        && let Some((_, account)) = crate::cashier::identity_account(&merchant, &checkout, browser)
        && let Some(identity) = account.adapter.payer_identity()
    {
        let (url, browser_token) = start_identity(&gw, &checkout, identity, now).await?;
        let binding = (
            IDENTITY_COOKIE,
            browser_token.as_str(),
            IDENTITY_PATH,
            IDENTITY_STATE_LIFE.whole_seconds(),
        );
        return crate::http::binding_redirect(&gw, &url, binding)
            .ok_or_else(|| ApiError::internal(&"the wallet's page is not a valid header"));
    }
    let offers = crate::cashier::offers(&merchant, &checkout, browser);
    let sandbox_wallet = match &state {
        Stage::Pending(p) => gw
            .config()
            .sandbox_wallets
            .iter()
            .find(|(wallet, _)| *wallet == p.provider)
            .map(|(_, url)| url.clone()),
        _ => None,
    };
    let nonce = new_token()?;
    let view = View {
        merchant_name: &merchant.name,
        checkout: &checkout,
        state: &state,
        offers: &offers,
        path: format!("/cashier/{token}"),
        notice: query
            .n
            .as_deref()
            .and_then(Notice::parse)
            .map(|n| n.text().to_owned()),
        sandbox_wallet,
        script_nonce: &nonce,
        after_sheet: query.sheet.as_deref() == Some("done"),
        now,
    };
    let rendered = page::render(&view);
    let mut response = page_response(
        StatusCode::OK,
        rendered.html,
        rendered.has_script.then_some(nonce.as_str()),
    );
    if let Some(cookie) = return_cookie(&gw, &checkout, &token, now) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

const IDENTITY_COOKIE: &str = "moongate_identity";
/// Where the wallet's OAuth comes back (the cookie's path).
const IDENTITY_PATH: &str = "/cashier/identity";

/// `GET /cashier/identity?code=…&state=…`: back from the wallet's OAuth; on to the checkout's
/// page, which now knows the payer (or says it could not learn who it is).
pub async fn cashier_identity(
    State(gw): State<Shared>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let browser = Browser::detect(user_agent(&headers));
    let cookie = crate::http::cookie_value(&headers, IDENTITY_COOKIE);
    let mut response =
        match finish_identity(&gw, &query, cookie.as_deref(), browser, gw.now()).await {
            Ok(page) => see_other(&page),
            Err(IdentityRefusal::Back(page)) => see_other(&page),
            Err(IdentityRefusal::State) => not_found(),
        };
    crate::http::end_binding(&mut response, IDENTITY_COOKIE, IDENTITY_PATH);
    response
}

/// The cookie [`cashier_return`] finds the page again with: the token, sent by this browser
/// only to its checkout's return path, until the checkout expires.
fn return_cookie(
    gw: &Gateway,
    checkout: &Checkout,
    token: &str,
    now: OffsetDateTime,
) -> Option<HeaderValue> {
    let seconds = (checkout.expires_at - now).whole_seconds();
    if seconds <= 0 {
        return None;
    }
    crate::http::binding_cookie(
        gw,
        RETURN_COOKIE,
        token,
        &return_path(&checkout.id),
        seconds,
    )
}

const RETURN_COOKIE: &str = "moongate_cashier";

/// Where a redirect wallet sends the shopper back (`create_request`'s return URL for a
/// checkout's payment): it names the checkout, never its token, so the payment, its signed
/// wallet URL and its events can be stored without a credential.
pub(crate) fn return_path(checkout_id: &str) -> String {
    format!("/cashier/return/{checkout_id}")
}

/// `GET /cashier/return/{checkout_id}`: a shopper back from a redirect wallet. The browser
/// that opened the page carries its token in a cookie and goes back to the page; any other
/// (or one whose cookie is gone) goes to the shop: its return URL once a payment is under way
/// (the shop asks for the status, as it would anyway), else its cancel URL.
pub async fn cashier_return(
    State(gw): State<Shared>,
    Path(checkout_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = gw.now();
    let Some(checkout) = gw.store.checkout(None, &checkout_id).await? else {
        return Ok(not_found());
    };
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| {
            *name == RETURN_COOKIE
                && plausible(value)
                && crate::cashier::key::token_hash(value) == checkout.token_hash
        })
        .map(|(_, value)| value.to_owned());
    if let Some(token) = token {
        return Ok(see_other(&format!("/cashier/{token}")));
    }
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let shop = match Stage::of(&checkout, &payments, now) {
        Stage::Paid(_) | Stage::Pending(_) => &checkout.return_url,
        Stage::Choose { .. } | Stage::Expired => {
            checkout.cancel_url.as_ref().unwrap_or(&checkout.return_url)
        }
    };
    Ok(see_other(shop))
}

/// `POST /cashier/{token}/pay`: the shopper chose a wallet. Answers with a redirect: to the
/// wallet for redirect methods, else back to the page (with a notice when it did not work).
pub async fn cashier_choose(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    axum::Form(form): axum::Form<ChoiceForm>,
) -> Result<Response, ApiError> {
    let Some((checkout, merchant)) = open(&gw, &token).await? else {
        return Ok(not_found());
    };
    let page = format!("/cashier/{token}");
    let back = |notice: Option<Notice>| match notice {
        Some(n) => see_other(&format!("{page}?n={}", n.code())),
        None => see_other(&page),
    };
    let browser = Browser::detect(user_agent(&headers));
    let client_ip = peer.map(|Extension(PeerAddr(addr))| {
        crate::client_ip::client_ip(addr, &headers, &gw.config().trusted_proxies).to_string()
    });
    let outcome = choose(&gw, &merchant, &checkout, browser, &form.method, client_ip).await?;
    tracing::info!(checkout = %checkout.id, method = %form.method, outcome = ?outcome.as_ref().err(), "cashier choice");
    Ok(match outcome {
        Ok(Some(url)) => see_other(&url),
        Ok(None) => back(None),
        Err(notice) => back(Some(notice)),
    })
}
