//! Merchants' authorisations of partners' apps (`gateway/authorisations.rs` does the work):
//! the admin listener's `POST /authorisations` (a start link) and `GET /authorisations`
//! (where each stands), and the merchant's browser's two public pages: `/authorise/{token}`
//! (to the provider's consent page, with the state bound to this browser) and
//! `/authorise/callback` (back from it).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::gateway::{AuthorisationError, BROWSER_COOKIE, STATE_LIFE};
use crate::http::{Shared, parse_body};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    merchant: String,
    account: String,
}

/// `POST /authorisations {"merchant","account"}` (admin): a start link for the merchant.
pub(crate) async fn start(State(gw): State<Shared>, body: Bytes) -> Result<Response, ApiError> {
    let start: Start = parse_body(&body)?;
    let started = gw
        .start_authorisation(&start.merchant, &start.account)
        .await?;
    let expires_at = started
        .expires_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "merchant": start.merchant,
            "account": start.account,
            "url": started.url,
            "expires_at": expires_at,
        })),
    )
        .into_response())
}

/// `GET /authorisations` (admin): every managed account's authorisation, tokens never shown.
pub(crate) async fn list(State(gw): State<Shared>) -> Result<Response, ApiError> {
    let views = gw.authorisation_views().await?;
    Ok(axum::Json(serde_json::json!({ "data": views })).into_response())
}

/// A page of the merchant's browser, with the cashier's headers (never cached, never framed,
/// no referrer: the link and the callback's code are credentials; no script).
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>{title}</title><h1>{title}</h1><p>{}</p>",
        crate::html::escape(text)
    );
    crate::http::cashier::page_response(status, body, None)
}

fn refused(error: &AuthorisationError) -> Response {
    let status = match error {
        AuthorisationError::LinkInvalid
        | AuthorisationError::StateInvalid
        | AuthorisationError::NoCode => StatusCode::BAD_REQUEST,
        AuthorisationError::UnknownAccount { .. } | AuthorisationError::NotManaged(_) => {
            StatusCode::NOT_FOUND
        }
        AuthorisationError::WrongMerchant { .. } => StatusCode::CONFLICT,
        AuthorisationError::Provider(_) => StatusCode::BAD_GATEWAY,
        AuthorisationError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        AuthorisationError::Seal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::warn!(%error, "authorisation step refused");
    page(status, "Authorisation not completed", &error.to_string())
}

/// `GET /authorise/{token}`: to the consent page, with a cookie binding the state to this
/// browser.
pub(crate) async fn open(State(gw): State<Shared>, Path(token): Path<String>) -> Response {
    let (consent, browser) = match gw.open_authorisation(&token).await {
        Ok(opened) => opened,
        Err(error) => return refused(&error),
    };
    let binding = (
        BROWSER_COOKIE,
        browser.as_str(),
        "/authorise",
        STATE_LIFE.whole_seconds(),
    );
    crate::http::binding_redirect(&gw, &consent, binding).unwrap_or_else(|| {
        page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Authorisation not started",
            "the consent page's address is not a valid header",
        )
    })
}

/// `GET /authorise/callback?app_auth_code=…&state=…`: back from the consent page.
pub(crate) async fn callback(
    State(gw): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let browser = crate::http::cookie_value(&headers, BROWSER_COOKIE);
    let mut response = match gw.finish_authorisation(&query, browser.as_deref()).await {
        Ok((merchant, account)) => page(
            StatusCode::OK,
            "Authorised",
            &format!(
                "Moongate now acts for merchant {merchant} on account {account}. You may close \
                 this page."
            ),
        ),
        Err(error) => refused(&error),
    };
    // The binding has done its work either way.
    crate::http::end_binding(&mut response, BROWSER_COOKIE, "/authorise");
    response
}
