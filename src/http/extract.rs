//! Extractors: the signed merchant request (signature, timestamp, nonce, merchant limits), the
//! `Idempotency-Key` header and the connection's peer address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use crate::auth::{authenticate, remember};
use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::Shared;
use crate::metrics::LimitLabels;
use crate::service::idempotency::claim_for;
use crate::store::{IdemClaim, NonceClaim};

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
    /// A POST's nonce, not remembered yet: [`Signed::claim`] hands it to the request's claim,
    /// whose ledger write remembers it (and refuses a replay). A read's was remembered by the
    /// extractor.
    nonce: Option<NonceClaim>,
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
        let now = gw.now();
        let (merchant, nonce) = signed_by(gw, &method, &uri, &headers, &body)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Signed {
            merchant,
            method,
            uri,
            headers,
            body,
            now,
            nonce,
        })
    }
}

impl Signed {
    /// The request's claim on its `Idempotency-Key` (every POST needs one), bound to a hash of
    /// its method, path and body, and carrying the request's nonce: what
    /// [`crate::service::idempotency::run`] starts from. Once per request.
    pub(crate) fn claim(&mut self) -> Result<IdemClaim, ApiError> {
        let key = idempotency_key(&self.headers)?;
        let nonce = self
            .nonce
            .take()
            .ok_or_else(|| ApiError::internal(&"a request claimed twice, or a read claimed"))?;
        Ok(claim_for(
            &self.merchant,
            key,
            &self.method,
            &self.uri,
            &self.body,
            self.now,
            nonce,
        ))
    }
}

/// Authenticates a `/v1` request (see [`crate::auth`]) and counts it against the merchant's
/// request limit. A read's nonce is remembered here; a POST's is returned, for its claim.
pub(crate) async fn signed_by(
    gw: &Gateway,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Arc<Merchant>, Option<NonceClaim>), ApiError> {
    // One config snapshot for the whole request, even if a reload happens meanwhile.
    let config = gw.config();
    let (merchant, nonce) = authenticate(&config, method, uri, headers, body, &gw.clock)?;
    let nonce = if method == Method::POST {
        Some(nonce)
    } else {
        remember(gw.store.as_ref(), &merchant.id, &nonce, &gw.clock).await?;
        None
    };
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
        Ok(_) => Ok((merchant, nonce)),
        Err(limited) => Err(over_limit(gw, &merchant, "local", limited.retry_after)),
    }
}

/// Logs, counts and renders a refusal by the merchant's request limit.
pub(crate) fn over_limit(
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

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::invalid(
            ErrorCode::IdempotencyKeyInvalid,
            "Idempotency-Key",
            "Idempotency-Key must be 1-255 printable ASCII characters",
        )
    };
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::IdempotencyKeyMissing,
                "Idempotency-Key",
                "every POST needs an Idempotency-Key header",
            )
        })?
        .to_str()
        .map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(key.to_owned())
}

/// The peer address of a connection, put into each request by the accept loop.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);
