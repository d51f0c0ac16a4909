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
use crate::service::checkouts::{Notice, choose, close_leftovers, new_token};

#[derive(Debug, Deserialize)]
pub struct ChoiceForm {
    method: String,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    n: Option<String>,
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
    let Some(checkout) = gw.store.checkout_by_token(token).await? else {
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
    let now = OffsetDateTime::now_utc();
    let Some((checkout, merchant)) = open(&gw, &token).await? else {
        return Ok(not_found());
    };
    let payments = gw.store.checkout_payments(&checkout.id).await?;
    let state = Stage::of(&checkout, &payments, now);
    close_leftovers(&gw, &state, &payments);
    let browser = Browser::detect(user_agent(&headers));
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
        now,
    };
    let rendered = page::render(&view);
    Ok(page_response(
        StatusCode::OK,
        rendered.html,
        rendered.has_script.then_some(nonce.as_str()),
    ))
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
