//! Idempotent POSTs: a request's claim on its `Idempotency-Key` (fresh, replay, in flight,
//! abandoned by a crash) and the first answer stored under it.

use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode, ErrorType};
use crate::gateway::Gateway;
use crate::store::{Begin, IdemClaim, NonceClaim};

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

/// A signed request's claim on `key`, bound to a hash of its method, path and body, carrying
/// the request's nonce (remembered by the claim's write).
pub(crate) fn claim_for(
    merchant: &Merchant,
    key: String,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    now: OffsetDateTime,
    nonce: NonceClaim,
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
        now,
        nonce: Some(nonce),
    }
}

/// The answer to a request whose key is still claimed by a request in progress.
pub(crate) fn key_in_use() -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        kind: ErrorType::IdempotencyError,
        code: ErrorCode::IdempotencyKeyInUse,
        message: "a request with this Idempotency-Key is still being processed; retry later"
            .to_owned(),
        param: Some("Idempotency-Key".to_owned()),
        headers: Vec::new(),
    }
}

fn idempotency_conflict<T>(begin: &Begin<T>) -> Option<ApiError> {
    match begin {
        Begin::Mismatch => Some(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: ErrorType::IdempotencyError,
            code: ErrorCode::IdempotencyKeyReused,
            message: "this Idempotency-Key was used with a different request".to_owned(),
            param: Some("Idempotency-Key".to_owned()),
            headers: Vec::new(),
        }),
        Begin::InFlight { .. } => Some(key_in_use()),
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
        } if gw.now() - *claimed_at > stale => Some(id.clone()),
        _ => None,
    }
}

/// A JSON answer: what a handler sends, and what an idempotency key keeps for retries. The
/// HTTP layer renders it.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Vec<u8>,
    /// True when this is a retry's replay of the first answer.
    pub replayed: bool,
}

impl Answer {
    /// A fresh JSON answer.
    pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
        Answer {
            status,
            body: to_bytes(value),
            replayed: false,
        }
    }

    /// The answer with the `url` of its `object` (a checkout's cashier link, a code's URL):
    /// the answer an idempotency key keeps has none, the link being a credential, so each
    /// answer gets it derived again from the id. A `url` already there is kept.
    pub(crate) fn with_url(mut self, object: &str, derive: impl Fn(&str) -> String) -> Answer {
        let Ok(serde_json::Value::Object(mut body)) =
            serde_json::from_slice::<serde_json::Value>(&self.body)
        else {
            return self;
        };
        let Some(id) = body
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|_| body.get("object").and_then(|v| v.as_str()) == Some(object))
            .filter(|_| body.get("url").is_none_or(serde_json::Value::is_null))
            .map(str::to_owned)
        else {
            return self;
        };
        body.insert("url".to_owned(), serde_json::Value::String(derive(&id)));
        self.body = to_bytes(&serde_json::Value::Object(body));
        self
    }
}

/// Stores the first answer under the merchant's idempotency key (retries replay it).
async fn store_answer(
    gw: &Gateway,
    merchant_id: &str,
    key: &str,
    status: StatusCode,
    body: Vec<u8>,
) -> Result<Answer, ApiError> {
    gw.store
        .complete_key(merchant_id, key, status.as_u16(), body.clone(), gw.now())
        .await?;
    Ok(Answer {
        status,
        body,
        replayed: false,
    })
}

/// What a claimed idempotency key tells a create handler to do.
enum Claimed<T> {
    /// A new key: carry on with the resource just stored.
    Fresh(T),
    /// Answer now (a replay of the first response).
    Answer(Answer),
    /// The first request died mid-way: answer with this resource's current state.
    Abandoned(String),
}

/// Reads a claim: a conflict is an error, a replay an answer, a stale claim names its
/// resource, a fresh one carries on.
fn claimed<T>(gw: &Gateway, begin: Begin<T>) -> Result<Claimed<T>, ApiError> {
    if let Some(id) = stale_resource(gw, &begin) {
        return Ok(Claimed::Abandoned(id));
    }
    if let Some(error) = idempotency_conflict(&begin) {
        return Err(error);
    }
    match begin {
        Begin::Replay { status, body } => Ok(Claimed::Answer(Answer {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            body,
            replayed: true,
        })),
        Begin::Fresh(resource) => Ok(Claimed::Fresh(resource)),
        Begin::InFlight { .. } | Begin::Mismatch => {
            Err(ApiError::internal(&"unreachable claim state"))
        }
    }
}

/// Serialises a JSON value (never fails for values built in code).
pub(crate) fn to_bytes(value: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// How the work of a fresh idempotent request ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done: this answer is stored under the key and sent; retries replay it.
    Done(Answer),
    /// Done, and the work already stored this answer under the key in its last commit
    /// ([`crate::store::Also::Answer`]): sent as it is.
    Stored(Answer),
    /// Refused before anything changed: the key is released, so a retry with the same key
    /// may try again (a cancel the provider did not confirm, a statement not ready yet).
    Refused(ApiError),
}

/// The one path of every idempotent POST, from the store's claim to the stored answer:
/// a conflicting or reused key is an error, a replay answers with the first response, a claim
/// abandoned by a crash answers through `abandoned` (the resource's current state, or
/// [`key_in_use`] where there is none to show), and a fresh claim runs `work`. Its `Done`
/// answer is stored under the key (a `Stored` one already is), a `Refused` releases the key; an `Err` leaves the claim as
/// it is (the ledger may have changed), to be answered as abandoned once stale.
pub(crate) async fn run<T>(
    gw: &Gateway,
    merchant_id: &str,
    key: &str,
    begin: Begin<T>,
    abandoned: impl AsyncFnOnce(String) -> Result<Answer, ApiError>,
    work: impl AsyncFnOnce(T) -> Result<Outcome, ApiError>,
) -> Result<Answer, ApiError> {
    let resource = match claimed(gw, begin)? {
        Claimed::Fresh(resource) => resource,
        Claimed::Answer(answer) => return Ok(answer),
        Claimed::Abandoned(id) => return abandoned(id).await,
    };
    match work(resource).await? {
        Outcome::Done(answer) => {
            store_answer(gw, merchant_id, key, answer.status, answer.body).await
        }
        Outcome::Stored(answer) => Ok(answer),
        Outcome::Refused(error) => {
            gw.store.release_key(merchant_id, key).await?;
            Err(error)
        }
    }
}
