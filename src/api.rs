//! The canonical checkout API (`/v1`) and the provider notification endpoints.
//!
//! Every `/v1` request is authenticated by signature ([`crate::auth`]); every POST needs an
//! `Idempotency-Key`, whose row commits together with the first ledger write. A merchant only
//! ever sees its own objects: another merchant's id answers exactly like a missing one.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use moongate_contract::{AckKind, Currency, Payer, PayerField, PaymentMethod, RawNotification};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::auth::authenticate;
use crate::config::Merchant;
use crate::error::{ApiError, ErrorType};
use crate::gateway::Gateway;
use crate::ledger::{Payment, PaymentStatus, Refund, RefundStatus, new_id};
use crate::metrics::{LimitLabels, OutcomeLabels, RequestLabels, RouteLabels};
use crate::registry;
use crate::routing::{Channel, RouteRequest};
use crate::store::{Begin, IdemClaim};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;
/// How old an unfinished idempotency claim must be to belong to a process that died (or was
/// killed) mid-request; a retry then answers with the resource's current state.
///
/// No request outlives its provider calls: a create calls each account of its priority list at
/// most once, each call bounded by `call_timeout_ms` (plus up to a second waiting for a rate
/// limit turn by default), so anything older than that, with a margin, is not running.
fn stale_claim(gw: &Gateway) -> Duration {
    let config = gw.config();
    let accounts = config
        .merchants
        .values()
        .map(|m| m.accounts.len())
        .max()
        .unwrap_or(1);
    let per_call = config.providers.call_timeout_ms.saturating_add(1_000);
    let calls = u64::try_from(accounts).unwrap_or(u64::MAX);
    Duration::from_millis(per_call.saturating_mul(calls).saturating_add(5_000))
}

type Shared = Arc<Gateway>;

/// The HTTP application.
pub fn router(gateway: Shared) -> Router {
    Router::new()
        .route("/v1/payments", post(create_payment).get(list_payments))
        .route("/v1/payments/{id}", get(get_payment))
        .route("/v1/payments/{id}/cancel", post(cancel_payment))
        .route("/v1/payments/{id}/refunds", post(create_refund))
        .route("/v1/refunds/{id}", get(get_refund))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/events/{id}/resend", post(resend_event))
        .route(
            "/v1/reconciliations",
            post(create_reconciliation).get(list_reconciliations),
        )
        .route("/v1/reconciliations/{id}", get(get_reconciliation))
        .route(
            "/v1/reconciliations/{id}/breaks.csv",
            get(get_reconciliation_csv),
        )
        .route(
            "/v1/reconciliations/{id}/report.html",
            get(get_reconciliation_html),
        )
        .route("/v1/reconciliation_breaks", get(list_breaks))
        .route("/v1/reconciliation_breaks/{id}", post(update_break))
        .route("/v1/reconciliation_breaks/{id}/repair", post(repair_break))
        .route("/v1/checkouts", post(crate::cashier::http::create_checkout))
        .route(
            "/v1/checkouts/{id}",
            get(crate::cashier::http::get_checkout),
        )
        .route("/cashier/{token}", get(crate::cashier::http::cashier_page))
        .route(
            "/cashier/{token}/pay",
            post(crate::cashier::http::cashier_choose),
        )
        .route("/notify/{provider}/{merchant}/{account}", post(notify))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::InvalidRequestError,
                "route_missing",
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            trace_request,
        ))
        .with_state(gateway)
}

/// The admin application (`server.admin_listen`): `/metrics` and `/healthz`. It has no
/// authentication; it must listen on a private address.
pub fn admin_router(gateway: Shared) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(gw): State<Shared>| async move {
                let now = std::time::Instant::now();
                let config = gw.config();
                for merchant in config.merchants.values() {
                    for account in &merchant.accounts {
                        let state = match account.circuit.state(now) {
                            crate::circuit::CircuitState::Closed => 0,
                            crate::circuit::CircuitState::HalfOpen => 1,
                            crate::circuit::CircuitState::Open => 2,
                        };
                        gw.metrics
                            .circuit_state
                            .get_or_create(&crate::metrics::AccountLabels {
                                merchant: merchant.id.clone(),
                                account: account.id.clone(),
                            })
                            .set(state);
                    }
                }
                let mut response = gw.metrics.render().into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/circuits", get(circuits))
        .route("/reconciliations", get(admin_reconciliations))
        .route("/reconciliations/{id}", get(admin_reconciliation_html))
        .route("/janitor/sweep", post(sweep))
        .with_state(gateway)
}

/// Checks every open payment and refund at its provider now, whatever its schedule (after an
/// incident, or in tests); answers how many were open.
async fn sweep(State(gw): State<Shared>) -> Response {
    match gw.recheck_once(std::time::Duration::ZERO).await {
        Ok(checked) => axum::Json(serde_json::json!({ "checked": checked })).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Every account's circuit state.
async fn circuits(State(gw): State<Shared>) -> Response {
    let now = std::time::Instant::now();
    let config = gw.config();
    let accounts: Vec<serde_json::Value> = config
        .merchants
        .values()
        .flat_map(|m| {
            m.accounts.iter().map(move |a| {
                serde_json::json!({
                    "merchant": m.id,
                    "account": a.id,
                    "provider": a.kind.as_str(),
                    "circuit": a.circuit.state(now).as_str(),
                })
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "accounts": accounts })).into_response()
}

async fn trace_request(
    State(gw): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The matched route, not the raw path: bounded label values.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("(unmatched)", |p| p.as_str())
        .to_owned();
    let http_method = request.method().as_str().to_owned();
    let request_id = new_id("req");
    // A cashier URL's token is a credential: its requests are logged by route.
    let path = if route.starts_with("/cashier/") {
        route.as_str()
    } else {
        request.uri().path()
    };
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %request.method(),
        path = %path,
        status = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("status", response.status().as_u16());
    gw.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method: http_method,
            status: response.status().as_u16(),
        })
        .inc();
    gw.metrics
        .request_seconds
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    tracing::info!(parent: &span, elapsed_ms = started.elapsed().as_millis() as u64, "served");
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
}

/// One of the merchant's payments; another merchant's answers exactly like a missing one.
pub(crate) async fn merchant_payment(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<Payment, ApiError> {
    gw.store
        .payment(Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("payment", id))
}

/// A `/v1` request whose signature, timestamp and nonce were checked (see [`crate::auth`]) and
/// which was counted against the merchant's request limits: the extractor every merchant
/// handler takes last (it reads the body).
#[derive(Debug)]
pub struct Signed {
    /// The authenticated merchant, from the request's one config snapshot.
    pub merchant: Arc<Merchant>,
    /// The request's method.
    pub method: Method,
    /// Its URI.
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// The body exactly as signed.
    pub body: Bytes,
    /// When the request was authenticated.
    pub now: OffsetDateTime,
}

impl axum::extract::FromRequest<Shared> for Signed {
    type Rejection = Response;

    async fn from_request(
        request: axum::extract::Request,
        gw: &Shared,
    ) -> Result<Signed, Response> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        let headers = request.headers().clone();
        // Within the router's body limit; over it, axum's own 413.
        let body = <Bytes as axum::extract::FromRequest<Shared>>::from_request(request, gw)
            .await
            .map_err(IntoResponse::into_response)?;
        let now = OffsetDateTime::now_utc();
        let merchant = signed_by(gw, &method, &uri, &headers, &body, now)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Signed {
            merchant,
            method,
            uri,
            headers,
            body,
            now,
        })
    }
}

/// Authenticates a `/v1` request (see [`crate::auth`]) and counts it against the merchant's
/// request limit.
async fn signed_by(
    gw: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<Arc<Merchant>, ApiError> {
    // One config snapshot for the whole request, even if a reload happens meanwhile.
    let config = gw.config();
    let merchant =
        authenticate(&config, gw.store.as_ref(), method, uri, headers, body, now).await?;
    let merchant = config
        .merchants
        .get(&merchant.id)
        .cloned()
        .ok_or_else(|| ApiError::internal(&"authenticated merchant missing"))?;
    // Counted after authentication, so nobody can spend a merchant's quota for it. The shared
    // (Redis) limit decides first when configured; the local one always counts, and decides
    // alone while Redis is unavailable.
    if let Some(shared) = &gw.shared_limits {
        use crate::shared_limits::SharedDecision;
        let decision = shared
            .check(
                &format!("merchant:{}", merchant.id),
                merchant.limit.per_second(),
                merchant.limit.burst(),
            )
            .await;
        let outcome = match &decision {
            SharedDecision::Allowed => "allowed",
            SharedDecision::Limited(_) => "limited",
            SharedDecision::Unavailable(_) => "unavailable",
        };
        gw.metrics
            .shared_limit_checks
            .get_or_create(&crate::metrics::SharedLimitLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
        gw.metrics.shared_limit_up.set(i64::from(!matches!(
            decision,
            SharedDecision::Unavailable(_)
        )));
        if let SharedDecision::Limited(retry_after) = decision {
            return Err(over_limit(gw, &merchant, "shared", retry_after));
        }
    }
    match merchant.limit.check() {
        Ok(_) => Ok(merchant),
        Err(limited) => Err(over_limit(gw, &merchant, "local", limited.retry_after)),
    }
}

/// Logs, counts and renders a refusal by the merchant's request limit.
fn over_limit(
    gw: &Gateway,
    merchant: &Merchant,
    which: &'static str,
    retry_after: Duration,
) -> ApiError {
    tracing::info!(merchant = %merchant.id, limiter = which, "request over the merchant's rate limit");
    gw.metrics
        .rate_limited
        .get_or_create(&LimitLabels {
            scope: "merchant".to_owned(),
            id: merchant.id.clone(),
        })
        .inc();
    ApiError::rate_limited(&merchant.limit, retry_after)
}

pub(crate) fn json_response(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(crate) fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Parses a JSON body strictly; errors name the offending parameter.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let param = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let code = if message.starts_with("unknown field") {
            "parameter_unknown"
        } else if message.starts_with("missing field") {
            "parameter_missing"
        } else if inner.is_syntax() || inner.is_eof() {
            "body_invalid_json"
        } else {
            "parameter_invalid"
        };
        let param = if param == "." { String::new() } else { param };
        let param = match (code, message.split('`').nth(1)) {
            ("parameter_unknown" | "parameter_missing", Some(field)) if param.is_empty() => {
                field.to_owned()
            }
            _ => param,
        };
        ApiError::invalid(code, param, message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid("body_invalid_json", "", e.to_string()))?;
    Ok(value)
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "idempotency_key_missing",
                "Idempotency-Key",
                "every POST needs an Idempotency-Key header",
            )
        })?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "idempotency_key_invalid",
            "Idempotency-Key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

pub(crate) fn claim_for(
    merchant: &Merchant,
    key: String,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> IdemClaim {
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update(b"\n");
    hash.update(uri.path());
    hash.update(b"\n");
    hash.update(body);
    IdemClaim {
        merchant_id: merchant.id.clone(),
        key,
        request_hash: hex::encode(hash.finalize()),
        now: OffsetDateTime::now_utc(),
    }
}

pub(crate) fn idempotency_conflict<T>(begin: &Begin<T>) -> Option<ApiError> {
    match begin {
        Begin::Mismatch => Some(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorType::IdempotencyError,
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used with a different request".to_owned(),
            param: Some("Idempotency-Key".to_owned()),
            headers: Vec::new(),
        }),
        Begin::InFlight { .. } => Some(ApiError {
            status: StatusCode::CONFLICT,
            kind: ErrorType::IdempotencyError,
            code: "idempotency_key_in_use",
            message: "a request with this Idempotency-Key is still being processed; retry later"
                .to_owned(),
            param: Some("Idempotency-Key".to_owned()),
            headers: Vec::new(),
        }),
        Begin::Fresh(_) | Begin::Replay { .. } => None,
    }
}

/// A claim abandoned by a crash: answer with the resource's current state.
fn stale_resource<T>(gw: &Gateway, begin: &Begin<T>) -> Option<String> {
    let stale = stale_claim(gw);
    match begin {
        Begin::InFlight {
            resource_id: Some(id),
            claimed_at,
        } if OffsetDateTime::now_utc() - *claimed_at > stale => Some(id.clone()),
        _ => None,
    }
}

/// Stores the first answer under the merchant's idempotency key (retries replay it) and sends it.
pub(crate) async fn keep_answer(
    gw: &Gateway,
    merchant_id: &str,
    key: &str,
    status: StatusCode,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    gw.store
        .complete_key(
            merchant_id,
            key,
            status.as_u16(),
            body.clone(),
            OffsetDateTime::now_utc(),
        )
        .await?;
    Ok(json_response(status, body, false))
}

/// What a claimed idempotency key tells a create handler to do.
pub(crate) enum Claimed<T> {
    /// A new key: carry on with the resource just stored.
    Fresh(T),
    /// Answer now (a replay of the first response).
    Answer(Response),
    /// The first request died mid-way: answer with this resource's current state.
    Abandoned(String),
}

/// Reads a claim: a conflict is an error, a replay an answer, a stale claim names its
/// resource, a fresh one carries on.
pub(crate) fn claimed<T>(gw: &Gateway, begin: Begin<T>) -> Result<Claimed<T>, ApiError> {
    if let Some(id) = stale_resource(gw, &begin) {
        return Ok(Claimed::Abandoned(id));
    }
    if let Some(error) = idempotency_conflict(&begin) {
        return Err(error);
    }
    match begin {
        Begin::Replay { status, body } => Ok(Claimed::Answer(json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            true,
        ))),
        Begin::Fresh(resource) => Ok(Claimed::Fresh(resource)),
        Begin::InFlight { .. } | Begin::Mismatch => {
            Err(ApiError::internal(&"unreachable claim state"))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePaymentBody {
    pub(crate) amount: i64,
    pub(crate) currency: String,
    pub(crate) method: String,
    pub(crate) merchant_reference: String,
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) return_url: Option<String>,
    #[serde(default)]
    pub(crate) expires_in_seconds: Option<i64>,
    #[serde(default)]
    pub(crate) metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub(crate) account: Option<String>,
    #[serde(default)]
    pub(crate) payer: Option<PayerBody>,
    #[serde(default)]
    pub(crate) channel: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayerBody {
    #[serde(default)]
    pub(crate) openid: Option<String>,
    #[serde(default)]
    pub(crate) client_ip: Option<String>,
    #[serde(default)]
    pub(crate) payment_code: Option<String>,
}

const DEFAULT_EXPIRY_SECS: i64 = 2 * 3600;

/// The method names the API accepts, for error messages.
fn method_names() -> String {
    let mut names: Vec<&str> = PaymentMethod::ALL.iter().map(|m| m.as_str()).collect();
    names.push("payment_code");
    names.join(", ")
}

/// A WeChat openid: 1-128 letters, digits, `_` or `-`.
pub(crate) fn check_openid(openid: &str) -> Result<(), ApiError> {
    let ok = !openid.is_empty()
        && openid.len() <= 128
        && openid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "parameter_invalid",
            "payer.openid",
            "1-128 letters, digits, '_' or '-'",
        ))
    }
}

/// Checks the payer details a method needs and returns them.
fn validate_payer(method: PaymentMethod, body: Option<PayerBody>) -> Result<Payer, ApiError> {
    let body = body.unwrap_or(PayerBody {
        openid: None,
        client_ip: None,
        payment_code: None,
    });
    if let Some(openid) = &body.openid {
        check_openid(openid)?;
    }
    if let Some(ip) = &body.client_ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "payer.client_ip",
            "must be an IPv4 or IPv6 address",
        ));
    }
    let Some(facts) = registry::method_facts(method) else {
        return Err(ApiError::invalid(
            "method_unsupported",
            "method",
            "no account of this merchant serves this method",
        ));
    };
    for &(field, message) in facts.payer {
        let present = match field {
            PayerField::Openid => body.openid.is_some(),
            PayerField::ClientIp => body.client_ip.is_some(),
            PayerField::PaymentCode => body.payment_code.is_some(),
        };
        if !present {
            return Err(ApiError::invalid(
                "parameter_missing",
                field.param(),
                message,
            ));
        }
    }
    match facts.payment_code {
        None if body.payment_code.is_some() => {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "payer.payment_code",
                "a payment code is only taken by payment_code methods",
            ));
        }
        Some(format)
            if !body
                .payment_code
                .as_deref()
                .is_some_and(|c| format.matches(c)) =>
        {
            return Err(ApiError::invalid(
                "payment_code_invalid",
                "payer.payment_code",
                format!("not a {} payment code", method.provider()),
            ));
        }
        _ => {}
    }
    Ok(Payer {
        openid: body.openid,
        client_ip: body.client_ip,
        payment_code: body.payment_code,
    })
}

/// The currency code and a positive amount in minor units (payments and checkouts).
pub(crate) fn check_money(currency: &str, amount: i64) -> Result<Currency, ApiError> {
    let currency = Currency::parse(currency).map_err(|_| {
        ApiError::invalid(
            "parameter_invalid",
            "currency",
            "currency must be an upper-case ISO 4217 code",
        )
    })?;
    if amount <= 0 {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "amount",
            "amount must be a positive integer in minor units",
        ));
    }
    Ok(currency)
}

/// The order reference and the description shown to the shopper.
pub(crate) fn check_order_text(reference: &str, description: &str) -> Result<(), ApiError> {
    let reference_ok =
        !reference.is_empty() && reference.len() <= 128 && !reference.chars().any(char::is_control);
    if !reference_ok {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "merchant_reference",
            "1-128 characters, no control characters",
        ));
    }
    let description_ok = !description.trim().is_empty()
        && description.chars().count() <= 256
        && !description.chars().any(char::is_control);
    if !description_ok {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "description",
            "1-256 characters, no control characters",
        ));
    }
    Ok(())
}

/// A browser URL the shopper is sent to.
pub(crate) fn check_url(param: &'static str, url: &str) -> Result<(), ApiError> {
    let ok = (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 512
        && !url.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "parameter_invalid",
            param,
            "must be an http(s) URL of at most 512 bytes",
        ))
    }
}

/// Merchant metadata: at most `max` string values, keys up to 40 and values up to 500 bytes.
pub(crate) fn check_metadata(
    metadata: &serde_json::Map<String, serde_json::Value>,
    max: usize,
) -> Result<(), ApiError> {
    let bad = metadata.len() > max
        || metadata
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 40 || v.as_str().is_none_or(|s| s.len() > 500));
    if bad {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "metadata",
            format!("at most {max} string values, keys up to 40 and values up to 500 bytes"),
        ));
    }
    Ok(())
}

/// Validates a create request and routes it: the payment (on its first account) and the
/// accounts to fail over to, in order.
pub(crate) fn validate_create(
    merchant: &Merchant,
    body: CreatePaymentBody,
    now: OffsetDateTime,
) -> Result<(Payment, Vec<String>), ApiError> {
    let currency = check_money(&body.currency, body.amount)?;
    let method = if body.method == "payment_code" {
        // One endpoint for any wallet's code: the prefix tells the wallet (china-wallets.md E).
        let code = body
            .payer
            .as_ref()
            .and_then(|p| p.payment_code.as_deref())
            .ok_or_else(|| {
                ApiError::invalid(
                    "parameter_missing",
                    "payer.payment_code",
                    "payment codes need the scanned code",
                )
            })?;
        registry::method_for_payment_code(code).ok_or_else(|| {
            ApiError::invalid(
                "payment_code_unsupported",
                "payer.payment_code",
                format!(
                    "the code belongs to no wallet Moongate serves ({})",
                    registry::payment_code_formats()
                ),
            )
        })?
    } else {
        PaymentMethod::parse(&body.method).ok_or_else(|| {
            ApiError::invalid(
                "parameter_invalid",
                "method",
                format!("unknown method; use one of {}", method_names()),
            )
        })?
    };
    let payer = validate_payer(method, body.payer)?;
    check_order_text(&body.merchant_reference, &body.description)?;
    if let Some(url) = &body.return_url {
        check_url("return_url", url)?;
    }
    if registry::method_facts(method).is_some_and(|m| m.needs_return_url)
        && body.return_url.is_none()
    {
        return Err(ApiError::invalid(
            "parameter_missing",
            "return_url",
            "redirect methods need a return_url",
        ));
    }
    let expires_in = body.expires_in_seconds.unwrap_or(DEFAULT_EXPIRY_SECS);
    if !(60..=15 * 24 * 3600).contains(&expires_in) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "expires_in_seconds",
            "must be between 60 seconds and 15 days",
        ));
    }
    let metadata = body.metadata.unwrap_or_default();
    check_metadata(&metadata, 20)?;
    let channel = match &body.channel {
        Some(text) => Some(Channel::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "parameter_invalid",
                "channel",
                "use web, mobile_web, in_app or point_of_sale",
            )
        })?),
        None => None,
    };
    // Say what no account can do before any rule is consulted.
    let serving: Vec<_> = merchant
        .accounts
        .iter()
        .map(|a| a.adapter.capabilities())
        .filter(|c| c.supports_method(method))
        .collect();
    if serving.is_empty() {
        return Err(ApiError::invalid(
            "method_unsupported",
            "method",
            "no account of this merchant serves this method",
        ));
    }
    if !serving.iter().any(|c| c.supports_currency(currency)) {
        return Err(ApiError::invalid(
            "currency_unsupported",
            "currency",
            format!("no account of this merchant can charge {currency} with this method"),
        ));
    }
    let id = new_id("pay");
    let (account, route, fallbacks) = match &body.account {
        Some(account_id) => {
            let account = merchant.account(account_id).ok_or_else(|| {
                ApiError::invalid(
                    "account_unknown",
                    "account",
                    "no such provider account for this merchant",
                )
            })?;
            (account, None, Vec::new())
        }
        None if !merchant.routes.is_empty() => {
            let request = RouteRequest {
                payment_id: &id,
                method,
                currency,
                amount: body.amount,
                channel,
                metadata: &metadata,
            };
            let serves = |account_id: &str| {
                merchant.account(account_id).is_some_and(|a| {
                    let capabilities = a.adapter.capabilities();
                    capabilities.supports_method(method) && capabilities.supports_currency(currency)
                })
            };
            let choice = merchant.routes.choose(&request, serves).ok_or_else(|| {
                ApiError::invalid(
                    "no_route",
                    "method",
                    "no routing rule of this merchant takes this payment",
                )
            })?;
            // Several accounts only for a priority list: the first is tried, the others are
            // failed over to when it certainly did not take the order.
            let account = choice
                .accounts
                .first()
                .and_then(|a| merchant.account(a))
                .ok_or_else(|| ApiError::internal(&"routed to a missing account"))?;
            let fallbacks = choice.accounts.get(1..).unwrap_or_default().to_vec();
            (account, Some(choice.rule), fallbacks)
        }
        None => {
            let account = merchant
                .accounts
                .iter()
                .find(|a| {
                    let capabilities = a.adapter.capabilities();
                    capabilities.supports_method(method) && capabilities.supports_currency(currency)
                })
                .ok_or_else(|| ApiError::internal(&"a serving account vanished"))?;
            (account, None, Vec::new())
        }
    };
    let capabilities = account.adapter.capabilities();
    if !capabilities.supports_method(method) {
        return Err(ApiError::invalid(
            "method_unsupported",
            "method",
            "this account does not serve this method",
        ));
    }
    if !capabilities.supports_currency(currency) {
        return Err(ApiError::invalid(
            "currency_unsupported",
            "currency",
            format!("{} cannot charge {currency}", account.kind),
        ));
    }
    let payment = Payment {
        provider_order_id: id.clone(),
        id,
        merchant_id: merchant.id.clone(),
        account_id: account.id.clone(),
        provider: account.kind,
        method,
        amount: body.amount,
        currency,
        merchant_reference: body.merchant_reference,
        description: body.description,
        return_url: body.return_url,
        metadata,
        provider_ref: None,
        status: PaymentStatus::Pending,
        next_action: None,
        failure: None,
        amount_refunded: 0,
        expires_at: now + time::Duration::seconds(expires_in),
        created_at: now,
        updated_at: now,
        payer,
        route,
        channel,
    };
    Ok((payment, fallbacks))
}

async fn create_payment(State(gw): State<Shared>, signed: Signed) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let merchant = &*merchant;
    let key = idempotency_key(&headers)?;
    let input: CreatePaymentBody = parse_body(&body)?;
    let (payment, fallbacks) = validate_create(merchant, input, now)?;
    let account = merchant
        .account(&payment.account_id)
        .ok_or_else(|| ApiError::internal(&"account vanished"))?;
    // Render (and sign) the provider request before anything is stored: a request the
    // provider could never accept is a 400 that leaves no trace in the ledger.
    let prepared = gw.prepare_create(&payment, &merchant.id, account);
    if let Err(moongate_contract::AdapterError::InvalidRequest(message)) = &prepared {
        return Err(ApiError::invalid("parameter_invalid", "", message.clone()));
    }
    let claim = claim_for(merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.begin_payment(claim, payment).await?;
    let payment = match claimed(&gw, begin)? {
        Claimed::Fresh(payment) => payment,
        Claimed::Answer(response) => return Ok(response),
        Claimed::Abandoned(id) => return current_payment(&gw, merchant, &id).await,
    };
    let payment = gw
        .drive_create_with_failover(payment, prepared, &fallbacks)
        .await?;
    if registry::is_payment_code(payment.method)
        && matches!(
            payment.status,
            PaymentStatus::Pending | PaymentStatus::Unknown
        )
    {
        tokio::spawn(Arc::clone(&gw).follow_payment_code(payment.id.clone()));
    }
    keep_answer(
        &gw,
        &merchant.id,
        &key,
        StatusCode::CREATED,
        to_bytes(&payment.to_api_json()),
    )
    .await
}

async fn current_payment(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<Response, ApiError> {
    let payment = merchant_payment(gw, merchant, id).await?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&payment.to_api_json()),
        true,
    ))
}

async fn get_payment(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let merchant = &*merchant;
    let payment = merchant_payment(&gw, merchant, &id).await?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&payment.to_api_json()),
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

async fn list_payments(State(gw): State<Shared>, signed: Signed) -> Result<Response, ApiError> {
    let Signed { merchant, uri, .. } = signed;
    let merchant = &*merchant;
    let query: ListQuery = serde_urlencoded_strict(uri.query().unwrap_or(""))?;
    let limit = query.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "limit",
            "limit must be 1 to 100",
        ));
    }
    if let Some(cursor) = &query.starting_after
        && gw
            .store
            .payment(Some(&merchant.id), cursor)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "starting_after",
            "no such payment",
        ));
    }
    let (payments, has_more) = gw
        .store
        .list_payments(&merchant.id, query.starting_after.as_deref(), limit)
        .await?;
    let data: Vec<serde_json::Value> = payments.iter().map(Payment::to_api_json).collect();
    let next_cursor = if has_more {
        payments.last().map(|p| p.id.clone())
    } else {
        None
    };
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "next_cursor": next_cursor,
    });
    Ok(json_response(StatusCode::OK, to_bytes(&body), false))
}

fn serde_urlencoded_strict<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut map = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = match key.as_ref() {
            "limit" => value
                .parse::<u32>()
                .map(serde_json::Value::from)
                .map_err(|_| {
                    ApiError::invalid("parameter_invalid", "limit", "limit must be an integer")
                })?,
            _ => serde_json::Value::String(value.into_owned()),
        };
        if map.insert(key.clone().into_owned(), value).is_some() {
            return Err(ApiError::invalid(
                "parameter_invalid",
                key.into_owned(),
                "repeated parameter",
            ));
        }
    }
    parse_body(&to_bytes(&serde_json::Value::Object(map)))
}

async fn cancel_payment(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        ..
    } = signed;
    let merchant = &*merchant;
    let key = idempotency_key(&headers)?;
    if !body.is_empty() {
        let _: serde_json::Map<String, serde_json::Value> = parse_body(&body)?;
    }
    let payment = merchant_payment(&gw, merchant, &id).await?;
    let claim = claim_for(merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.claim_key(claim, &payment.id).await?;
    match claimed(&gw, begin)? {
        Claimed::Fresh(()) => {}
        Claimed::Answer(response) => return Ok(response),
        Claimed::Abandoned(id) => return current_payment(&gw, merchant, &id).await,
    }
    let outcome = match payment.status {
        PaymentStatus::Canceled => Ok(payment),
        PaymentStatus::Succeeded | PaymentStatus::Failed => Err(ApiError::invalid(
            "payment_not_cancelable",
            "id",
            format!("a {} payment cannot be canceled", payment.status.as_str()),
        )),
        PaymentStatus::Pending | PaymentStatus::RequiresAction | PaymentStatus::Unknown => {
            match gw.cancel(payment).await? {
                Some(p) if p.status == PaymentStatus::Canceled => Ok(p),
                Some(p) => Err(ApiError::invalid(
                    "payment_not_cancelable",
                    "id",
                    format!("the provider reports the payment as {}", p.status.as_str()),
                )),
                None => Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    ErrorType::ProviderError,
                    "provider_unavailable",
                    "the provider did not confirm the cancellation; retry with a new Idempotency-Key",
                )),
            }
        }
    };
    match outcome {
        Ok(payment) => {
            keep_answer(
                &gw,
                &merchant.id,
                &key,
                StatusCode::OK,
                to_bytes(&payment.to_api_json()),
            )
            .await
        }
        Err(error) => {
            gw.store.release_key(&merchant.id, &key).await?;
            Err(error)
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRefundBody {
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
}

async fn create_refund(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let merchant = &*merchant;
    let key = idempotency_key(&headers)?;
    let input: CreateRefundBody = if body.is_empty() {
        CreateRefundBody {
            amount: None,
            reason: None,
        }
    } else {
        parse_body(&body)?
    };
    let payment = merchant_payment(&gw, merchant, &id).await?;
    let amount = input
        .amount
        .unwrap_or(payment.amount - payment.amount_refunded);
    if amount <= 0 {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "amount",
            "amount must be a positive integer in minor units",
        ));
    }
    if let Some(reason) = &input.reason
        && (reason.chars().count() > 256 || reason.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "reason",
            "at most 256 characters, no control characters",
        ));
    }
    let refund = Refund {
        id: new_id("re"),
        payment_id: payment.id.clone(),
        merchant_id: merchant.id.clone(),
        amount,
        currency: payment.currency,
        reason: input.reason,
        status: RefundStatus::Pending,
        failure: None,
        created_at: now,
        updated_at: now,
    };
    let Some(bound) = gw.account_of(&payment) else {
        return Err(ApiError::internal(&"payment account missing from config"));
    };
    let prepared = gw.prepare_refund(&refund, &payment, bound.account());
    if let Err(moongate_contract::AdapterError::InvalidRequest(message)) = &prepared {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "amount",
            message.clone(),
        ));
    }
    let claim = claim_for(merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.begin_refund(claim, refund).await?;
    let refund = match claimed(&gw, begin)? {
        Claimed::Fresh(refund) => refund,
        Claimed::Answer(response) => return Ok(response),
        Claimed::Abandoned(id) => {
            let refund = gw
                .store
                .refund(Some(&merchant.id), &id)
                .await?
                .ok_or_else(|| ApiError::missing("refund", &id))?;
            return Ok(json_response(
                StatusCode::OK,
                to_bytes(&refund.to_api_json()),
                true,
            ));
        }
    };
    let refund = gw.drive_refund(refund, &payment, prepared).await?;
    keep_answer(
        &gw,
        &merchant.id,
        &key,
        StatusCode::CREATED,
        to_bytes(&refund.to_api_json()),
    )
    .await
}

async fn get_refund(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let merchant = &*merchant;
    let refund = gw
        .store
        .refund(Some(&merchant.id), &id)
        .await?
        .ok_or_else(|| ApiError::missing("refund", &id))?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&refund.to_api_json()),
        false,
    ))
}

fn event_json(record: &crate::store::EventRecord) -> serde_json::Value {
    let mut event: serde_json::Value =
        serde_json::from_str(&record.body).unwrap_or(serde_json::Value::Null);
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let status = match (&record.delivered_at, &record.next_attempt_at) {
        (_, Some(_)) => "pending",
        (Some(_), None) => "delivered",
        (None, None) => "parked",
    };
    let log: Vec<serde_json::Value> = record
        .deliveries
        .iter()
        .map(|d| {
            serde_json::json!({
                "attempted_at": rfc3339(d.attempted_at),
                "delivered": d.delivered,
                "error": d.error,
            })
        })
        .collect();
    if let Some(map) = event.as_object_mut() {
        map.insert(
            "delivery".to_owned(),
            serde_json::json!({
                "status": status,
                "attempts": record.attempts,
                "next_attempt_at": record.next_attempt_at.map(rfc3339),
                "log": log,
            }),
        );
    }
    event
}

/// One event with its delivery status and log.
async fn get_event(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let record = gw
        .store
        .event(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::missing("event", &id))?;
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&event_json(&record)),
        false,
    ))
}

/// Queues an event for delivery again now (with a fresh retry schedule), e.g. after the
/// merchant's endpoint was down longer than the schedule lasted.
async fn resend_event(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let key = idempotency_key(&headers)?;
    if !body.is_empty() {
        let _: serde_json::Map<String, serde_json::Value> = parse_body(&body)?;
    }
    if gw.store.event(&merchant.id, &id).await?.is_none() {
        return Err(ApiError::missing("event", &id));
    }
    let claim = claim_for(&merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.claim_key(claim, &id).await?;
    if let Some(error) = idempotency_conflict(&begin) {
        return Err(error);
    }
    if let Begin::Replay { status, body } = begin {
        return Ok(json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            true,
        ));
    }
    gw.store.resend_event(&merchant.id, &id, now).await?;
    let record = gw
        .store
        .event(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::missing("event", &id))?;
    keep_answer(
        &gw,
        &merchant.id,
        &key,
        StatusCode::OK,
        to_bytes(&event_json(&record)),
    )
    .await
}

async fn notify(
    State(gw): State<Shared>,
    Path((provider, merchant, account)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let raw = RawNotification {
        headers: &header_pairs,
        body: &body,
        received_at: OffsetDateTime::now_utc(),
    };
    let known_provider = gw
        .config()
        .merchants
        .get(&merchant)
        .and_then(|m| m.account(&account))
        .is_some_and(|a| a.kind.as_str() == provider);
    if !known_provider {
        return (StatusCode::NOT_FOUND, "unknown notification endpoint").into_response();
    }
    let (adapter, accepted) = gw.handle_notification(&merchant, &account, &raw).await;
    let Some(adapter) = adapter else {
        return (StatusCode::NOT_FOUND, "unknown notification endpoint").into_response();
    };
    gw.metrics
        .notifications
        .get_or_create(&OutcomeLabels {
            source: provider.clone(),
            outcome: if accepted { "accepted" } else { "rejected" }.to_owned(),
        })
        .inc();
    let ack = adapter.notification_ack(if accepted {
        AckKind::Accepted
    } else {
        AckKind::Rejected
    });
    let mut response = (
        StatusCode::from_u16(ack.status).unwrap_or(StatusCode::OK),
        ack.body,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ack.content_type),
    );
    response
}

// --- Reconciliation -----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconciliationBody {
    /// Provider account.
    account: String,
    /// Statement day `yyyy-MM-dd` (Beijing); default yesterday.
    #[serde(default)]
    date: Option<String>,
}

fn run_summary(run: &crate::store::ReconRun) -> serde_json::Value {
    let mut summary: serde_json::Value =
        serde_json::from_str(&run.report).unwrap_or(serde_json::Value::Null);
    if let Some(map) = summary.as_object_mut() {
        map.remove("breaks");
        map.insert("object".to_owned(), "reconciliation".into());
    }
    summary
}

fn report_json(report: &crate::reconcile::report::Report) -> Vec<u8> {
    let mut value = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("object".to_owned(), "reconciliation".into());
    }
    to_bytes(&value)
}

/// Runs a reconciliation now: downloads the account's statement for the day, matches it and
/// answers with the report. The run is stored; repeat the call (new key) to run it again.
async fn create_reconciliation(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let key = idempotency_key(&headers)?;
    let request: ReconciliationBody = parse_body(&body)?;
    let day = match &request.date {
        Some(text) => crate::reconcile::run::parse_day(text).ok_or_else(|| {
            ApiError::invalid("parameter_invalid", "date", "date must be yyyy-MM-dd")
        })?,
        None => crate::reconcile::run::yesterday_beijing(now),
    };
    if !merchant.accounts.iter().any(|a| a.id == request.account) {
        return Err(ApiError::invalid(
            "account_not_found",
            "account",
            "no such account for this merchant",
        ));
    }
    let resource = format!(
        "recon:{}:{}",
        request.account,
        crate::reconcile::run::format_day(day)
    );
    let claim = claim_for(&merchant, key.clone(), &method, &uri, &body);
    let begin = gw.store.claim_key(claim, &resource).await?;
    if let Some(error) = idempotency_conflict(&begin) {
        return Err(error);
    }
    if let Begin::Replay { status, body } = begin {
        return Ok(json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            true,
        ));
    }
    let run = crate::reconcile::run::RunRequest {
        merchant_id: merchant.id.clone(),
        account_id: request.account.clone(),
        day,
        source: crate::reconcile::run::Source::Download,
    };
    match crate::reconcile::run::reconcile(&gw, run, None).await {
        Ok(report) => {
            keep_answer(
                &gw,
                &merchant.id,
                &key,
                StatusCode::CREATED,
                report_json(&report),
            )
            .await
        }
        Err(error) => {
            // Nothing was stored as a run: the key may be used again (e.g. once the bill is ready).
            gw.store.release_key(&merchant.id, &key).await?;
            Err(error.into())
        }
    }
}

async fn list_reconciliations(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let runs = gw.store.recon_runs(Some(&merchant.id), 100).await?;
    let data: Vec<serde_json::Value> = runs.iter().map(run_summary).collect();
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&serde_json::json!({"object": "list", "data": data})),
        false,
    ))
}

async fn merchant_report(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<crate::reconcile::report::Report, ApiError> {
    crate::reconcile::run::load_report(gw, Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("reconciliation", id))
}

async fn get_reconciliation(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(json_response(StatusCode::OK, report_json(&report), false))
}

fn typed(body: String, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn get_reconciliation_csv(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(typed(
        crate::reconcile::report::breaks_csv(&report),
        "text/csv; charset=utf-8",
    ))
}

async fn get_reconciliation_html(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(typed(
        crate::reconcile::report::html(&report),
        "text/html; charset=utf-8",
    ))
}

fn break_json(stored: &crate::store::StoredBreak) -> serde_json::Value {
    let mut value = serde_json::to_value(&stored.record).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("object".to_owned(), "reconciliation_break".into());
        map.insert("account".to_owned(), stored.account_id.clone().into());
        map.insert("statement_day".to_owned(), stored.day.clone().into());
        map.insert("reconciliation".to_owned(), stored.run_id.clone().into());
    }
    value
}

#[derive(Debug, Deserialize)]
struct BreakQuery {
    status: Option<String>,
}

async fn list_breaks(
    State(gw): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<BreakQuery>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let status = match query.status.as_deref() {
        Some(text) => Some(crate::reconcile::BreakStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "parameter_invalid",
                "status",
                "status must be open, resolved or ignored",
            )
        })?),
        None => None,
    };
    let breaks = gw.store.breaks(Some(&merchant.id), status, 1000).await?;
    let data: Vec<serde_json::Value> = breaks.iter().map(break_json).collect();
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&serde_json::json!({"object": "list", "data": data})),
        false,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BreakUpdate {
    status: String,
    #[serde(default)]
    note: Option<String>,
}

/// Claims the key of a break action; `Err(Ok(response))` is a replay to send back as is.
async fn claim_break_action(
    gw: &Gateway,
    merchant: &Merchant,
    key: &str,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    id: &str,
) -> Result<Option<Response>, ApiError> {
    if gw
        .store
        .break_by_id(Some(&merchant.id), id)
        .await?
        .is_none()
    {
        return Err(ApiError::missing("break", id));
    }
    let claim = claim_for(merchant, key.to_owned(), method, uri, body);
    let begin = gw.store.claim_key(claim, id).await?;
    if let Some(error) = idempotency_conflict(&begin) {
        return Err(error);
    }
    if let Begin::Replay { status, body } = begin {
        return Ok(Some(json_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            true,
        )));
    }
    Ok(None)
}

async fn update_break(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        now,
    } = signed;
    let key = idempotency_key(&headers)?;
    let update: BreakUpdate = parse_body(&body)?;
    let status = crate::reconcile::BreakStatus::parse(&update.status).ok_or_else(|| {
        ApiError::invalid(
            "parameter_invalid",
            "status",
            "status must be open, resolved or ignored",
        )
    })?;
    if update
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 2000)
    {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "note",
            "note is at most 2000 characters",
        ));
    }
    if let Some(replay) =
        claim_break_action(&gw, &merchant, &key, &method, &uri, &body, &id).await?
    {
        return Ok(replay);
    }
    let stored = gw
        .store
        .set_break_status(Some(&merchant.id), &id, status, update.note, now)
        .await?
        .ok_or_else(|| ApiError::missing("break", &id))?;
    keep_answer(
        &gw,
        &merchant.id,
        &key,
        StatusCode::OK,
        to_bytes(&break_json(&stored)),
    )
    .await
}

/// Repairs a `missing_in_ledger` payment break from the provider's record.
async fn repair_break(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed {
        merchant,
        method,
        uri,
        headers,
        body,
        ..
    } = signed;
    let key = idempotency_key(&headers)?;
    if !body.is_empty() {
        let _: serde_json::Map<String, serde_json::Value> = parse_body(&body)?;
    }
    if let Some(replay) =
        claim_break_action(&gw, &merchant, &key, &method, &uri, &body, &id).await?
    {
        return Ok(replay);
    }
    match crate::reconcile::repair::repair_break(&gw, Some(&merchant.id), &id).await {
        Ok((payment, stored)) => {
            keep_answer(
                &gw,
                &merchant.id,
                &key,
                StatusCode::OK,
                to_bytes(&serde_json::json!({
                    "object": "reconciliation_repair",
                    "payment": payment.to_api_json(),
                    "break": break_json(&stored),
                })),
            )
            .await
        }
        Err(error) => {
            gw.store.release_key(&merchant.id, &key).await?;
            Err(error.into())
        }
    }
}

/// Admin listener (private): the latest runs, each linking to its HTML report.
async fn admin_reconciliations(State(gw): State<Shared>) -> Result<Response, ApiError> {
    let runs = gw.store.recon_runs(None, 200).await?;
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Moongate reconciliations</title></head><body style=\"font-family:sans-serif\"><h1>Reconciliations</h1><ul>",
    );
    for run in &runs {
        page.push_str(&format!(
            "<li><a href=\"/reconciliations/{id}\">{day} · {merchant}/{account}</a> <code>{id}</code></li>",
            id = crate::sandbox::html_escape(&run.id),
            day = crate::sandbox::html_escape(&run.day),
            merchant = crate::sandbox::html_escape(&run.merchant_id),
            account = crate::sandbox::html_escape(&run.account_id),
        ));
    }
    page.push_str("</ul></body></html>");
    Ok(typed(page, "text/html; charset=utf-8"))
}

/// Admin listener (private): one run's HTML report, for a browser.
async fn admin_reconciliation_html(
    State(gw): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = crate::reconcile::run::load_report(&gw, None, &id)
        .await?
        .ok_or_else(|| ApiError::missing("reconciliation", &id))?;
    Ok(typed(
        crate::reconcile::report::html(&report),
        "text/html; charset=utf-8",
    ))
}
