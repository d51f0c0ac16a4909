//! The API's one error shape and the one place errors become HTTP responses:
//! `{"error":{"type":…,"code":…,"message":…,"param":…}}` with a stable `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::store::{RefundRefusal, StoreError};

/// Declares the error codes: the enum, its stable names and the list of all of them.
macro_rules! error_codes {
    ($($variant:ident => $name:literal,)*) => {
        /// Every stable `code` the API answers with (the one list; `openapi.yaml`'s `Error.code`
        /// enumeration is held against it).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $name]
                $variant,
            )*
        }

        impl ErrorCode {
            /// All codes.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as the API writes it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }
        }
    };
}

error_codes! {
    AccountNotFound => "account_not_found",
    AccountUnknown => "account_unknown",
    AdminTokenRequired => "admin_token_required",
    AuthenticationRequired => "authentication_required",
    BodyInvalidJson => "body_invalid_json",
    BodyTimeout => "body_timeout",
    BodyTooLarge => "body_too_large",
    BodyUnreadable => "body_unreadable",
    BreakNotRepairable => "break_not_repairable",
    CurrencyUnsupported => "currency_unsupported",
    IdempotencyKeyInUse => "idempotency_key_in_use",
    IdempotencyKeyInvalid => "idempotency_key_invalid",
    IdempotencyKeyMissing => "idempotency_key_missing",
    IdempotencyKeyReused => "idempotency_key_reused",
    InternalError => "internal_error",
    LedgerUnavailable => "ledger_unavailable",
    MethodNotAllowed => "method_not_allowed",
    MethodUnsupported => "method_unsupported",
    NoRoute => "no_route",
    NonceInvalid => "nonce_invalid",
    NonceReused => "nonce_reused",
    ParameterInvalid => "parameter_invalid",
    ParameterMissing => "parameter_missing",
    ParameterUnknown => "parameter_unknown",
    PaymentAlreadyInLedger => "payment_already_in_ledger",
    PaymentCodeInvalid => "payment_code_invalid",
    PaymentCodeUnsupported => "payment_code_unsupported",
    PaymentNotCancelable => "payment_not_cancelable",
    PaymentNotRefundable => "payment_not_refundable",
    ProviderNotPaid => "provider_not_paid",
    ProviderUnavailable => "provider_unavailable",
    RateLimit => "rate_limit",
    ReconciliationBusy => "reconciliation_busy",
    ReconciliationInProgress => "reconciliation_in_progress",
    RefundExceedsPayment => "refund_exceeds_payment",
    RequestMalformed => "request_malformed",
    ResourceMissing => "resource_missing",
    ReturnHostNotAllowed => "return_host_not_allowed",
    RouteMissing => "route_missing",
    SignatureInvalid => "signature_invalid",
    StatementDownloadFailed => "statement_download_failed",
    StatementFileError => "statement_file_error",
    StatementHashMismatch => "statement_hash_mismatch",
    StatementNotReady => "statement_not_ready",
    StatementRefused => "statement_refused",
    StatementUnavailable => "statement_unavailable",
    StatementUnsupported => "statement_unsupported",
    SweepInProgress => "sweep_in_progress",
    TimestampInvalid => "timestamp_invalid",
    TimestampOutOfWindow => "timestamp_out_of_window",
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Whole seconds to put in `Retry-After`: rounded up, at least one.
fn retry_seconds(retry_after: std::time::Duration) -> u64 {
    (retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).max(1)
}

/// Error families, as in Stripe's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is wrong; fix it before retrying.
    InvalidRequestError,
    /// The request is not signed correctly.
    AuthenticationError,
    /// An `Idempotency-Key` problem.
    IdempotencyError,
    /// The payment provider failed or could not be reached.
    ProviderError,
    /// Too many requests; retry after the time given.
    RateLimitError,
    /// Moongate failed.
    ApiError,
}

/// An API error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Family.
    pub kind: ErrorType,
    /// Stable machine code.
    pub code: ErrorCode,
    /// Human message (never contains secrets).
    pub message: String,
    /// The offending parameter.
    pub param: Option<String>,
    /// Extra response headers (`Retry-After`, `RateLimit`, …).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// 400 on a parameter.
    pub fn invalid(code: ErrorCode, param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorType::InvalidRequestError,
            code,
            message: message.into(),
            param: Some(param.into()),
            headers: Vec::new(),
        }
    }

    /// Any status, no parameter.
    pub fn new(
        status: StatusCode,
        kind: ErrorType,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            headers: Vec::new(),
        }
    }

    /// 401.
    pub fn auth(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorType::AuthenticationError,
            code,
            message,
        )
    }

    /// 404 for a resource the merchant cannot see (missing or another merchant's).
    pub fn missing(what: &str, id: &str) -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            kind: ErrorType::InvalidRequestError,
            code: ErrorCode::ResourceMissing,
            message: format!(
                "no such {what}: {}",
                id.chars().take(64).collect::<String>()
            ),
            param: Some("id".to_owned()),
            headers: Vec::new(),
        }
    }

    /// 429: over the merchant's request limit. Headers per draft-ietf-httpapi-ratelimit-headers
    /// (`RateLimit-Policy`, `RateLimit`) plus `Retry-After` and the older `X-RateLimit-*`.
    pub fn rate_limited(limit: &crate::limits::Limit, retry_after: std::time::Duration) -> Self {
        let seconds = retry_seconds(retry_after);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            ErrorCode::RateLimit,
            format!(
                "too many requests: this merchant may send {} per second (burst {}); retry after {seconds} s",
                limit.per_second(),
                limit.burst()
            ),
        );
        error.headers = vec![
            ("retry-after", seconds.to_string()),
            ("ratelimit-policy", limit.policy_header("merchant")),
            ("ratelimit", format!("\"merchant\";r=0;t={seconds}")),
            ("x-ratelimit-limit", limit.burst().to_string()),
            ("x-ratelimit-remaining", "0".to_owned()),
        ];
        error
    }

    /// 429 for starting reconciliation runs faster than
    /// [`crate::config::Merchant::RECONCILIATIONS_PER_MINUTE`].
    pub fn reconciliations_limited(
        limit: &crate::limits::Limit,
        retry_after: std::time::Duration,
    ) -> Self {
        let seconds = retry_seconds(retry_after);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorType::RateLimitError,
            ErrorCode::RateLimit,
            format!(
                "too many reconciliation runs: this merchant may start {} per minute; retry after {seconds} s",
                crate::config::Merchant::RECONCILIATIONS_PER_MINUTE
            ),
        );
        error.headers = vec![
            ("retry-after", seconds.to_string()),
            ("ratelimit-policy", limit.policy_header("reconciliations")),
            ("ratelimit", format!("\"reconciliations\";r=0;t={seconds}")),
        ];
        error
    }

    /// 400 for a request the provider's adapter refused to render (it could never be
    /// accepted): the parameter the adapter names, else `param`.
    pub fn unsendable(error: &moongate_contract::AdapterError, param: &str) -> Option<Self> {
        use moongate_contract::AdapterError as E;
        match error {
            E::InvalidParameter { param, message } => Some(ApiError::invalid(
                ErrorCode::ParameterInvalid,
                *param,
                message.clone(),
            )),
            E::InvalidRequest(message) => Some(ApiError::invalid(
                ErrorCode::ParameterInvalid,
                param,
                message.clone(),
            )),
            _ => None,
        }
    }

    /// 500; the detail goes to the log, not the caller.
    pub fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorType::ApiError,
            ErrorCode::InternalError,
            "Moongate failed to process the request; it is safe to retry with the same Idempotency-Key",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "type": self.kind,
                "code": self.code,
                "message": self.message,
                "param": self.param,
            }
        })
    }
}

impl From<crate::gateway::AuthorisationError> for ApiError {
    fn from(error: crate::gateway::AuthorisationError) -> Self {
        use crate::gateway::AuthorisationError as E;
        match error {
            E::UnknownAccount { merchant, account } => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorType::InvalidRequestError,
                ErrorCode::AccountNotFound,
                format!("merchant {merchant:?} has no account {account:?}"),
            ),
            error @ E::NotManaged(_) => {
                ApiError::invalid(ErrorCode::ParameterInvalid, "account", error.to_string())
            }
            E::Store(error) => ApiError::from(error),
            other => ApiError::internal(&other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::RefundRefused(RefundRefusal::PaymentMissing) => {
                ApiError::missing("payment", "")
            }
            StoreError::RefundRefused(RefundRefusal::NotPaid) => ApiError::invalid(
                ErrorCode::PaymentNotRefundable,
                "id",
                "only succeeded payments can be refunded",
            ),
            StoreError::RefundRefused(RefundRefusal::ExceedsPayment) => ApiError::invalid(
                ErrorCode::RefundExceedsPayment,
                "amount",
                "refunds (pending and succeeded) would exceed the amount paid",
            ),
            // The ledger could not be read or written (a full disk, a lost database
            // connection): nothing was done, and the request can be retried as it is.
            StoreError::Database(detail) => {
                tracing::error!(error = %detail, "ledger unavailable");
                let mut error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorType::ApiError,
                    ErrorCode::LedgerUnavailable,
                    "the ledger is unavailable; nothing was done: retry shortly with the same Idempotency-Key",
                );
                error.headers.push(("retry-after", "5".to_owned()));
                error
            }
            StoreError::NonceReused => crate::auth::nonce_reused(),
            other => ApiError::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

impl From<crate::reconcile::run::ReconcileError> for ApiError {
    fn from(error: crate::reconcile::run::ReconcileError) -> Self {
        use crate::reconcile::run::ReconcileError as E;
        let code = error.code();
        match error {
            E::Store(store) => ApiError::from(store),
            E::UnknownAccount(_) => ApiError::invalid(code, "account", error.to_string()),
            E::Unsupported(_) => ApiError::invalid(code, "account", error.to_string()),
            E::NotReady(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::ProviderError,
                code,
                error.to_string(),
            ),
            E::Provider(_) | E::Download(_) | E::HashMismatch { .. } => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorType::ProviderError,
                code,
                error.to_string(),
            ),
            E::Refused(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorType::ProviderError,
                code,
                error.to_string(),
            ),
            E::Io(_) => ApiError::internal(&error),
        }
    }
}

impl From<crate::reconcile::repair::RepairError> for ApiError {
    fn from(error: crate::reconcile::repair::RepairError) -> Self {
        use crate::reconcile::repair::RepairError as E;
        match error {
            E::Store(store) => ApiError::from(store),
            E::UnknownBreak(id) => ApiError::missing("break", &id),
            E::NotRepairable { .. } => {
                ApiError::invalid(ErrorCode::BreakNotRepairable, "id", error.to_string())
            }
            E::UnknownAccount(_) => {
                ApiError::invalid(ErrorCode::AccountNotFound, "id", error.to_string())
            }
            E::AlreadyInLedger(_) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::InvalidRequestError,
                ErrorCode::PaymentAlreadyInLedger,
                error.to_string(),
            ),
            E::NotPaid { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::ProviderError,
                ErrorCode::ProviderNotPaid,
                error.to_string(),
            ),
            E::Provider(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorType::ProviderError,
                ErrorCode::ProviderUnavailable,
                error.to_string(),
            ),
        }
    }
}
