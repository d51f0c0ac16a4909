//! The HTTP layer: the router, response helpers and one module per resource. Handlers are thin:
//! the [`extract::Signed`] extractor authenticates, the service layer ([`crate::service`]) does
//! the work, [`crate::error::ApiError`] maps errors to HTTP in one place.
//!
//! Every `/v1` request is authenticated by signature ([`crate::auth`]); every POST needs an
//! `Idempotency-Key`, whose row commits together with the first ledger write. A merchant only
//! ever sees its own objects: another merchant's id answers exactly like a missing one.

pub mod admin;
pub mod authorisations;
pub mod cashier;
pub mod checkouts;
pub mod codes;
pub mod events;
pub mod extract;
pub mod notify;
pub mod payments;
pub mod reconciliations;
pub mod refunds;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode, ErrorType};
use crate::gateway::Gateway;
use crate::ledger::new_id;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::service::idempotency::Answer;
pub(crate) use crate::service::idempotency::to_bytes;

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

pub(crate) type Shared = Arc<Gateway>;

/// Declares the `/v1` routes once: the router's and the list of them
/// ([`V1_ROUTES`], held against `openapi.yaml` in both directions by `tests/openapi.rs`).
macro_rules! v1_routes {
    ($($path:literal => { $($method:ident : $handler:path),+ $(,)? }),* $(,)?) => {
        /// Every `/v1` path with its methods (lower case), as the router serves them.
        pub const V1_ROUTES: &[(&str, &[&str])] = &[$(($path, &[$(stringify!($method)),+])),*];

        fn v1_router() -> Router<Shared> {
            Router::new()$(.route($path, v1_routes!(@methods $($method : $handler),+)))*
        }
    };
    (@methods $first:ident : $first_handler:path $(, $method:ident : $handler:path)*) => {
        axum::routing::$first($first_handler)$(.$method($handler))*
    };
}

v1_routes! {
    "/v1/payments" => { post: payments::create_payment, get: payments::list_payments },
    "/v1/payments/{id}" => { get: payments::get_payment },
    "/v1/payments/{id}/cancel" => { post: payments::cancel_payment },
    "/v1/payments/{id}/refunds" => { post: refunds::create_refund },
    "/v1/refunds/{id}" => { get: refunds::get_refund },
    "/v1/events" => { get: events::list_events },
    "/v1/events/resend" => { post: events::resend_events },
    "/v1/events/{id}" => { get: events::get_event },
    "/v1/events/{id}/resend" => { post: events::resend_event },
    "/v1/reconciliations" => {
        post: reconciliations::create_reconciliation,
        get: reconciliations::list_reconciliations,
    },
    "/v1/reconciliations/{id}" => { get: reconciliations::get_reconciliation },
    "/v1/reconciliations/{id}/breaks.csv" => { get: reconciliations::get_reconciliation_csv },
    "/v1/reconciliations/{id}/report.html" => { get: reconciliations::get_reconciliation_html },
    "/v1/reconciliation_breaks" => { get: reconciliations::list_breaks },
    "/v1/reconciliation_breaks/{id}" => { post: reconciliations::update_break },
    "/v1/reconciliation_breaks/{id}/repair" => { post: reconciliations::repair_break },
    "/v1/checkouts" => { post: checkouts::create_checkout },
    "/v1/checkouts/{id}" => { get: checkouts::get_checkout },
    "/v1/checkouts/{id}/qr.svg" => { get: checkouts::get_checkout_qr },
    "/v1/codes" => { post: codes::create_code, get: codes::list_codes },
    "/v1/codes/{id}" => { get: codes::get_code },
    "/v1/codes/{id}/disable" => { post: codes::disable_code },
    "/v1/codes/{id}/poster.svg" => { get: codes::code_poster },
    "/v1/codes/{id}/poster.png" => { get: codes::code_poster_png },
}

/// The HTTP application.
pub fn router(gateway: Shared) -> Router {
    v1_router()
        .route("/cashier/identity", get(cashier::cashier_identity))
        .route("/cashier/{token}", get(cashier::cashier_page))
        .route("/cashier/{token}/pay", post(cashier::cashier_choose))
        // UnionPay's gateway sends the shopper back with a POST (its `frontUrl` return): the
        // same page, the form a hint only.
        .route(
            "/cashier/return/{checkout_id}",
            get(cashier::cashier_return).post(cashier::cashier_return),
        )
        .route(
            "/notify/{provider}/{merchant}/{account}",
            post(notify::notify),
        )
        .route(
            "/c/{token}",
            get(codes::code_page_get).post(codes::code_page_post),
        )
        .route("/authorise/callback", get(authorisations::callback))
        .route("/authorise/{token}", get(authorisations::open))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz_public))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::InvalidRequestError,
                ErrorCode::RouteMissing,
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            read_body,
        ))
        .layer(axum::middleware::from_fn(one_error_shape))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            trace_request,
        ))
        .with_state(gateway)
}

/// Every error the API answers is in the one JSON shape, including those the framework gives
/// before a handler runs: `405 method_not_allowed` (with `Allow`), a path or query that cannot
/// be read (`400 request_malformed`), and any other.
async fn one_error_shape(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let api = request.uri().path().starts_with("/v1");
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !api || status.as_u16() < 400 || json {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            format!("{method} is not served on this path"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => return too_large(),
        _ => (
            ErrorCode::RequestMalformed,
            "the request could not be read (a path, query or header that is not valid)".to_owned(),
        ),
    };
    let allow = response.headers().get(header::ALLOW).cloned();
    let mut answer =
        ApiError::new(status, ErrorType::InvalidRequestError, code, message).into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

/// Reads every request body before any handler runs: within `server.body_read_timeout_ms`
/// (a client that sends its headers and trickles the body does not hold a connection and a
/// task for as long as it likes: `408 body_timeout`, connection closed) and within the
/// largest body accepted (`413 body_too_large`). Handlers then get the body in memory.
async fn read_body(
    State(gw): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let timeout = std::time::Duration::from_millis(gw.config().body_read_timeout_ms);
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Ok(Err(error)) => {
            let over =
                std::iter::successors(Some(&error as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            if over {
                too_large()
            } else {
                closing(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorType::InvalidRequestError,
                    ErrorCode::BodyUnreadable,
                    "the request body could not be read",
                ))
            }
        }
        Err(_) => closing(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::InvalidRequestError,
            ErrorCode::BodyTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

fn too_large() -> Response {
    closing(ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorType::InvalidRequestError,
        ErrorCode::BodyTooLarge,
        format!("the request body is larger than {MAX_BODY} bytes"),
    ))
}

/// An error after which the connection is closed (its body was not read to the end).
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What readiness found: whether the ledger commits and the shared limits' Redis answers
/// (when configured), and the reasons.
async fn readiness(gw: &Gateway) -> (bool, serde_json::Value) {
    let now = gw.now();
    let ledger = gw
        .store
        .probe_write(&format!("readyz:{}", gw.instance_id), now)
        .await;
    let shared = match &gw.shared_limits {
        None => None,
        Some(limiter) => Some(limiter.check("readyz", 1_000_000, 1_000_000).await),
    };
    let shared_ok = !matches!(
        shared,
        Some(crate::shared_limits::SharedDecision::Unavailable(_))
    );
    let ready = ledger.is_ok() && shared_ok;
    let reasons = serde_json::json!({
        "ledger": match &ledger {
            Ok(()) => "ok".to_owned(),
            Err(error) => format!("cannot commit: {error}"),
        },
        "shared_limits": match &shared {
            None => "not configured".to_owned(),
            Some(crate::shared_limits::SharedDecision::Unavailable(why)) => format!("unavailable: {why}"),
            Some(_) => "ok".to_owned(),
        },
    });
    if !ready {
        tracing::warn!(%reasons, "not ready");
    }
    (ready, reasons)
}

/// The readiness answer: 200 or 503, with the reasons or only the status.
async fn readyz(gw: &Gateway, with_reasons: bool) -> Response {
    let (ready, reasons) = readiness(gw).await;
    let mut body = serde_json::json!({"status": if ready { "ready" } else { "not_ready" }});
    if with_reasons
        && let (Some(body), serde_json::Value::Object(reasons)) = (body.as_object_mut(), reasons)
    {
        body.extend(reasons);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, to_bytes(&body), false)
}

/// `GET /readyz` on the public listener: 200 when this instance can take payments (its
/// ledger commits; its Redis answers, when configured), else 503; the reasons are on the
/// admin listener's `/readyz` and in the log. `/healthz` only says the process runs.
async fn readyz_public(State(gw): State<Shared>) -> Response {
    readyz(&gw, false).await
}

/// `GET /readyz` on the admin listener, with the reasons.
async fn readyz_admin(State(gw): State<Shared>) -> Response {
    readyz(&gw, true).await
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
                let gauge = |state| match state {
                    crate::circuit::CircuitState::Closed => 0,
                    crate::circuit::CircuitState::HalfOpen => 1,
                    crate::circuit::CircuitState::Open => 2,
                };
                for merchant in config.merchants.values() {
                    for account in &merchant.accounts {
                        gw.metrics
                            .circuit_state
                            .get_or_create(&crate::metrics::AccountLabels {
                                merchant: merchant.id.clone(),
                                account: account.id.clone(),
                            })
                            .set(gauge(account.circuit.state(now)));
                    }
                }
                for partner in config.partners.values() {
                    gw.metrics
                        .partner_circuit_state
                        .get_or_create(&crate::metrics::PartnerLabels {
                            partner: partner.id.clone(),
                        })
                        .set(gauge(partner.circuit.state(now)));
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
        .route("/readyz", get(readyz_admin))
        .route("/circuits", get(admin::circuits))
        .route("/reconciliations", get(admin::admin_reconciliations))
        .route(
            "/reconciliations/{id}",
            get(admin::admin_reconciliation_html),
        )
        .route("/janitor/sweep", post(admin::sweep))
        .route(
            "/authorisations",
            post(authorisations::start).get(authorisations::list),
        )
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&gateway),
            admin::require_token,
        ))
        .with_state(gateway)
}

/// The path a request is logged under. A cashier URL's token is a credential, so every path
/// under `/cashier/`, matched by a route or not (a trailing slash, a typo), is logged by its
/// route or as `/cashier/…`, never with the token.
fn logged_path<'a>(route: &'a str, raw: &'a str) -> &'a str {
    // A code's token and an authorisation link's are credentials too.
    if raw.starts_with("/c/") {
        return if route.starts_with("/c/") {
            route
        } else {
            "/c/…"
        };
    }
    if raw.starts_with("/authorise/") {
        return if route.starts_with("/authorise/") {
            route
        } else {
            "/authorise/…"
        };
    }
    if !raw.starts_with("/cashier/") {
        raw
    } else if route.starts_with("/cashier/") {
        route
    } else {
        "/cashier/…"
    }
}

pub(crate) async fn trace_request(
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
    let path = logged_path(&route, request.uri().path());
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

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        json_response(self.status, self.body, self.replayed)
    }
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

/// The body of an action that takes no parameters: empty, or a JSON object (whose members
/// are not read).
pub(crate) fn no_parameters(body: &[u8]) -> Result<(), ApiError> {
    if !body.is_empty() {
        let _: serde_json::Map<String, serde_json::Value> = parse_body(body)?;
    }
    Ok(())
}

/// The value of cookie `name` the browser sent.
pub(crate) fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// A cookie binding a step to this browser: `HttpOnly`, `SameSite=Lax` (a wallet's or a
/// provider's redirect back is a top-level navigation, which carries it), `Secure` when the
/// gateway is served over https, sent only to `path`.
pub(crate) fn binding_cookie(
    gw: &Gateway,
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: i64,
) -> Option<HeaderValue> {
    let secure = if gw.config().public_base_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}"
    ))
    .ok()
}

/// `302` to `location` with the cookie that binds the next step to this browser
/// ([`binding_cookie`]), never cached, no referrer; `None` when either is not a valid header.
pub(crate) fn binding_redirect(
    gw: &Gateway,
    location: &str,
    (name, value, path, max_age_secs): (&str, &str, &str, i64),
) -> Option<Response> {
    let location = HeaderValue::from_str(location).ok()?;
    let cookie = binding_cookie(gw, name, value, path, max_age_secs)?;
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    headers.insert(header::SET_COOKIE, cookie);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}

/// Ends a binding cookie once its step is done (whatever its outcome).
pub(crate) fn end_binding(response: &mut Response, name: &str, path: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("{name}=; Path={path}; Max-Age=0; HttpOnly"))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// Parses a JSON body strictly; errors name the offending parameter.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let param = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let code = if message.starts_with("unknown field") {
            ErrorCode::ParameterUnknown
        } else if message.starts_with("missing field") {
            ErrorCode::ParameterMissing
        } else if inner.is_syntax() || inner.is_eof() {
            ErrorCode::BodyInvalidJson
        } else {
            ErrorCode::ParameterInvalid
        };
        let param = if param == "." { String::new() } else { param };
        let param = match (code, message.split('`').nth(1)) {
            (ErrorCode::ParameterUnknown | ErrorCode::ParameterMissing, Some(field))
                if param.is_empty() =>
            {
                field.to_owned()
            }
            _ => param,
        };
        ApiError::invalid(code, param, message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::invalid(ErrorCode::BodyInvalidJson, "", e.to_string()))?;
    Ok(value)
}

/// A list's page size: `limit` 1 to 100, 10 when not given.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(10);
    if (1..=100).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "limit",
            "limit must be 1 to 100",
        ))
    }
}

pub(crate) fn serde_urlencoded_strict<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut map = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = match key.as_ref() {
            "limit" => value
                .parse::<u32>()
                .map(serde_json::Value::from)
                .map_err(|_| {
                    ApiError::invalid(
                        ErrorCode::ParameterInvalid,
                        "limit",
                        "limit must be an integer",
                    )
                })?,
            _ => serde_json::Value::String(value.into_owned()),
        };
        if map.insert(key.clone().into_owned(), value).is_some() {
            return Err(ApiError::invalid(
                ErrorCode::ParameterInvalid,
                key.into_owned(),
                "repeated parameter",
            ));
        }
    }
    parse_body(&to_bytes(&serde_json::Value::Object(map)))
}

pub(crate) fn typed(body: String, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::logged_path;

    #[test]
    fn cashier_tokens_never_reach_the_log() {
        let token = "Qm9vb29vb29vb29vb29vb29vb29vb29vb29vb29vb28";
        for raw in [
            format!("/cashier/{token}"),
            format!("/cashier/{token}/"),
            format!("/cashier/{token}/pay/x"),
        ] {
            for route in ["/cashier/{token}", "(unmatched)"] {
                let logged = logged_path(route, &raw);
                assert!(!logged.contains(token), "{raw} logged as {logged}");
            }
        }
        assert_eq!(logged_path("(unmatched)", "/v1/nothing"), "/v1/nothing");
        assert_eq!(
            logged_path("/v1/payments/{id}", "/v1/payments/pay_1"),
            "/v1/payments/pay_1"
        );
    }
}
