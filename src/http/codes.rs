//! Static payment codes: `POST/GET /v1/codes`, `GET /v1/codes/{id}`,
//! `POST /v1/codes/{id}/disable`, `GET /v1/codes/{id}/poster.svg` and `poster.png` (signed, for
//! merchants), and
//! the shopper's page `/c/{token}` (`service/codes.rs` does the work).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::cashier::Browser;
use crate::cashier::page::{self, CodeView};
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::cashier::{page_response, plausible, see_other};
use crate::http::extract::Signed;
use crate::http::{
    Shared, json_response, no_parameters, parse_body, serde_urlencoded_strict, to_bytes,
};
use crate::ledger::code::{Code, CodeStatus};
use crate::service::codes::{CreateCodeBody, ScanRefusal, scan, validate_code};
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome};

fn view(gw: &Gateway, code: &Code, now: OffsetDateTime) -> serde_json::Value {
    code.to_api_json(Some(&gw.code_url(&code.id)), now)
}

async fn merchant_code(gw: &Gateway, merchant_id: &str, id: &str) -> Result<Code, ApiError> {
    gw.store
        .code(merchant_id, id)
        .await?
        .ok_or_else(|| ApiError::missing("code", id))
}

/// A code's current state, as the answer to a retry whose first request was abandoned.
async fn current(
    gw: &Gateway,
    merchant_id: &str,
    id: &str,
    now: OffsetDateTime,
) -> Result<Answer, ApiError> {
    let code = merchant_code(gw, merchant_id, id).await?;
    Ok(Answer {
        status: StatusCode::OK,
        body: to_bytes(&view(gw, &code, now)),
        replayed: true,
    })
}

/// `POST /v1/codes`.
pub(crate) async fn create_code(
    State(gw): State<Shared>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    let input: CreateCodeBody = parse_body(&body)?;
    let code = validate_code(&gw, &merchant, input, now)?;
    let begin = gw.store.begin_code(claim, code).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| current(&gw, &merchant.id, &id, now).await,
        async |code| {
            tracing::info!(code = %code.id, merchant = %merchant.id, "code created");
            let body = code.to_api_json(None, now);
            Ok(Outcome::Done(Answer::json(StatusCode::CREATED, &body)))
        },
    )
    .await
    .map(|answer| {
        answer
            .with_url("code", |id| gw.code_url(id))
            .into_response()
    })
}

/// `GET /v1/codes/{id}`.
pub(crate) async fn get_code(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, now, .. } = signed;
    let code = merchant_code(&gw, &merchant.id, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&view(&gw, &code, now)),
        false,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    starting_after: Option<String>,
}

/// `GET /v1/codes`: newest first.
pub(crate) async fn list_codes(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant, uri, now, ..
    } = signed;
    let query: ListQuery = serde_urlencoded_strict(uri.query().unwrap_or(""))?;
    let limit = crate::http::page_limit(query.limit)?;
    if let Some(cursor) = &query.starting_after
        && gw.store.code(&merchant.id, cursor).await?.is_none()
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "starting_after",
            "no such code",
        ));
    }
    let mut codes = gw
        .store
        .codes(&merchant.id, query.starting_after.as_deref(), limit + 1)
        .await?;
    let has_more = codes.len() > limit as usize;
    codes.truncate(limit as usize);
    let data: Vec<serde_json::Value> = codes.iter().map(|c| view(&gw, c, now)).collect();
    let next_cursor = if has_more {
        codes.last().map(|c| c.id.clone())
    } else {
        None
    };
    let body = serde_json::json!({
        "object": "list", "data": data, "has_more": has_more, "next_cursor": next_cursor,
    });
    Ok(json_response(StatusCode::OK, to_bytes(&body), false))
}

/// `POST /v1/codes/{id}/disable`: the code takes no more payments (payments already made are
/// untouched). Disabling twice answers the same.
pub(crate) async fn disable_code(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    no_parameters(&body)?;
    let code = merchant_code(&gw, &merchant.id, &id).await?;
    let begin = gw.store.claim_key(claim, &code.id).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |id| current(&gw, &merchant.id, &id, now).await,
        async |()| {
            let code = gw
                .store
                .disable_code(&merchant.id, &code.id, now)
                .await?
                .ok_or_else(|| ApiError::missing("code", &code.id))?;
            tracing::info!(code = %code.id, merchant = %merchant.id, "code disabled");
            let body = code.to_api_json(None, now);
            Ok(Outcome::Done(Answer::json(StatusCode::OK, &body)))
        },
    )
    .await
    .map(|answer| {
        answer
            .with_url("code", |id| gw.code_url(id))
            .into_response()
    })
}

/// The wallets a code's merchant can take through it, for its page and poster.
fn wallets(gw: &Gateway, code: &Code) -> Vec<moongate_contract::ProviderKind> {
    match gw.config().merchants.get(&code.merchant_id) {
        Some(merchant) => crate::service::codes::wallets(gw, merchant, code, gw.now()),
        None => Vec::new(),
    }
}

/// The poster of the signed merchant's code `id`, as SVG.
async fn poster_svg(gw: &Gateway, signed: Signed, id: &str) -> Result<String, ApiError> {
    let Signed { merchant, .. } = signed;
    let code = merchant_code(gw, &merchant.id, id).await?;
    crate::cashier::page::code_poster(
        &merchant.name,
        &code,
        &gw.code_url(&code.id),
        &wallets(gw, &code),
    )
    .ok_or_else(|| ApiError::internal(&"the code's URL does not fit a QR code"))
}

/// `GET /v1/codes/{id}/poster.svg`: a printable poster (A6 proportions): the merchant's and
/// the code's names, the fixed amount, the accepted wallets' names in their colours and the QR
/// of the code's URL.
pub(crate) async fn code_poster(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let svg = poster_svg(&gw, signed, &id).await?;
    let mut response = (StatusCode::OK, svg).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    Ok(response)
}

/// `GET /v1/codes/{id}/poster.png`: the same poster drawn at 300 dpi, for printers and
/// messaging apps that take no SVG.
pub(crate) async fn code_poster_png(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let svg = poster_svg(&gw, signed, &id).await?;
    // Drawing takes tens of milliseconds of CPU: off the async workers.
    let png = tokio::task::spawn_blocking(move || {
        crate::cashier::raster::png(&svg, crate::cashier::raster::POSTER_DPI)
    })
    .await
    .map_err(|e| ApiError::internal(&e))?
    .map_err(|e| ApiError::internal(&e))?;
    let mut response = (StatusCode::OK, png).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    Ok(response)
}

/// The code a token opens (a code whose merchant a reload removed opens none).
async fn open(gw: &Gateway, token: &str) -> Result<Option<(Code, String)>, ApiError> {
    if !plausible(token) {
        return Ok(None);
    }
    let hash = crate::cashier::key::token_hash(token);
    let Some(code) = gw.store.code_by_token_hash(&hash).await? else {
        return Ok(None);
    };
    let Some(name) = gw
        .config()
        .merchants
        .get(&code.merchant_id)
        .map(|m| m.name.clone())
    else {
        return Ok(None);
    };
    Ok(Some((code, name)))
}

fn closed(status: CodeStatus) -> Response {
    page_response(
        StatusCode::GONE,
        page::code_closed(status == CodeStatus::Expired),
        None,
    )
}

/// A code's page; in a desktop browser (no wallet app to pay with) it shows the code itself
/// to scan with a phone's wallet app, and the cashier it leads to shows each wallet's QR.
fn code_page(
    gw: &Gateway,
    code: &Code,
    merchant_name: &str,
    (token, headers): (&str, &HeaderMap),
    notice: Option<&str>,
    status: StatusCode,
) -> Response {
    let action = format!("/c/{token}");
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let on_desktop = Browser::detect(agent) == Browser::Desktop;
    let url = on_desktop.then(|| gw.code_url(&code.id));
    let html = page::code_page(&CodeView {
        merchant_name,
        name: &code.name,
        amount: code.amount,
        currency: code.currency,
        wallets: wallets(gw, code),
        action: &action,
        notice,
        scan_with_phone: url.as_deref(),
    });
    page_response(status, html, None)
}

/// `GET /c/{token}`: the code's page (or, back from the cashier with `?receipt=`, the receipt
/// of that checkout when it is this code's).
pub(crate) async fn code_page_get(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (code, merchant_name) = match open(&gw, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return crate::http::cashier::not_found(),
        Err(error) => return error.into_response(),
    };
    if let Some(checkout_id) = query.get("receipt") {
        return receipt(&gw, &code, &merchant_name, checkout_id).await;
    }
    let status = code.status(gw.now());
    if status != CodeStatus::Active {
        return closed(status);
    }
    code_page(
        &gw,
        &code,
        &merchant_name,
        (&token, &headers),
        None,
        StatusCode::OK,
    )
}

async fn receipt(gw: &Gateway, code: &Code, merchant_name: &str, checkout_id: &str) -> Response {
    let found = match gw
        .store
        .checkout(Some(&code.merchant_id), checkout_id)
        .await
    {
        Ok(found) => found,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(checkout) = found.filter(|c| {
        c.metadata
            .get(crate::service::codes::CODE_ID)
            .and_then(|v| v.as_str())
            == Some(&code.id)
    }) else {
        return crate::http::cashier::not_found();
    };
    let payments = match gw.store.checkout_payments(&checkout.id).await {
        Ok(payments) => payments,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let paid = payments
        .iter()
        .find(|p| p.status == crate::ledger::PaymentStatus::Succeeded);
    page_response(
        StatusCode::OK,
        page::code_receipt(
            merchant_name,
            &code.name,
            checkout.amount,
            checkout.currency,
            paid,
            &gw.checkout_url(&checkout),
        ),
        None,
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScanForm {
    #[serde(default)]
    amount: Option<String>,
}

/// `POST /c/{token}` (the page's form): a checkout for this scan, and the shopper on to its
/// cashier page, which branches on the wallet app the page was opened in.
pub(crate) async fn code_page_post(
    State(gw): State<Shared>,
    Path(token): Path<String>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<ScanForm>,
) -> Response {
    let (code, merchant_name) = match open(&gw, &token).await {
        Ok(Some(found)) => found,
        Ok(None) => return crate::http::cashier::not_found(),
        Err(error) => return error.into_response(),
    };
    if let Err(wait) = gw.code_limits.check(&code.id) {
        let mut response = page_response(StatusCode::TOO_MANY_REQUESTS, page::code_busy(), None);
        if let Ok(value) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    match scan(&gw, &code, form.amount.as_deref(), gw.now()).await {
        Ok(checkout) => {
            tracing::info!(code = %code.id, checkout = %checkout.id, "code scanned");
            see_other(&gw.checkout_url(&checkout))
        }
        Err(ScanRefusal::Closed(status)) => closed(status),
        Err(ScanRefusal::Amount(notice)) => code_page(
            &gw,
            &code,
            &merchant_name,
            (&token, &headers),
            Some(&notice),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(ScanRefusal::Api(error)) => error.into_response(),
    }
}
