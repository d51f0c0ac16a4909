//! Merchant request signatures.
//!
//! ```text
//! Moongate-Key-Id:    shop_k1
//! Moongate-Timestamp: 1763800000            (unix seconds)
//! Moongate-Nonce:     3f9c…                 (16-64 of [A-Za-z0-9_-], never reused)
//! Moongate-Signature: hex(HMAC-SHA256(secret, METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nhex(SHA256(body))\n))
//! ```
//!
//! Checked in this order: key and signature (constant time), timestamp window, then the nonce
//! (remembered only for correctly signed requests, so nobody else can burn them). A read
//! remembers its nonce at once ([`remember`]); a POST hands it to its idempotency claim, which
//! remembers it in the same ledger write as the key ([`crate::store::IdemClaim::nonce`]):
//! a POST has no effect before that write, and a replay is refused by it.

use axum::http::{HeaderMap, Method, Uri};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{Config, Merchant};
use crate::error::{ApiError, ErrorCode};
use crate::store::{NonceClaim, Store};

type HmacSha256 = Hmac<Sha256>;

/// The canonical string a merchant signs.
pub fn canonical_string(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    let digest = hex::encode(Sha256::digest(body));
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{digest}\n")
}

/// Signs a request (used by tests, the demo client and the README example's twin).
pub fn sign(secret: &[u8], canonical: &str) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(canonical.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::auth(
                ErrorCode::AuthenticationRequired,
                format!("missing {name} header"),
            )
        })
}

/// Authenticates a request; returns the merchant it speaks for and the request's nonce, checked
/// in form but not yet remembered (see the module's notes).
pub fn authenticate<'c>(
    config: &'c Config,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    clock: &Clock,
) -> Result<(&'c Merchant, NonceClaim), ApiError> {
    let key_id = header(headers, "moongate-key-id")?;
    let timestamp = header(headers, "moongate-timestamp")?;
    let nonce = header(headers, "moongate-nonce")?;
    let signature = header(headers, "moongate-signature")?;

    let bad_signature = || {
        ApiError::auth(
            ErrorCode::SignatureInvalid,
            "the request signature does not verify",
        )
    };
    let (merchant, key) = config
        .merchants
        .values()
        .find_map(|m| m.keys.iter().find(|k| k.id == key_id).map(|k| (m, k)))
        .ok_or_else(bad_signature)?;
    let signature = hex::decode(signature).map_err(|_| bad_signature())?;
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let canonical = canonical_string(method.as_str(), path_and_query, timestamp, nonce, body);
    let mut mac = HmacSha256::new_from_slice(key.secret.expose()).map_err(|_| bad_signature())?;
    mac.update(canonical.as_bytes());
    mac.verify_slice(&signature).map_err(|_| bad_signature())?;

    let tolerance = i64::try_from(config.signature_tolerance_secs).unwrap_or(300);
    let sent: i64 = timestamp.parse().map_err(|_| {
        ApiError::auth(
            ErrorCode::TimestampInvalid,
            "Moongate-Timestamp must be unix seconds",
        )
    })?;
    // The client signed with its clock: compared with the system clock.
    let skew = clock.wall().unix_timestamp().saturating_sub(sent);
    if skew.abs() > tolerance {
        return Err(ApiError::auth(
            ErrorCode::TimestampOutOfWindow,
            format!(
                "Moongate-Timestamp is {skew} s away from Moongate's clock (limit {tolerance} s)"
            ),
        ));
    }
    let nonce_ok = (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !nonce_ok {
        return Err(ApiError::auth(
            ErrorCode::NonceInvalid,
            "Moongate-Nonce must be 16-64 of [A-Za-z0-9_-]",
        ));
    }
    // Kept (on Moongate's clock) for longer than the window lasts.
    let keep_until = clock.now() + time::Duration::seconds(2 * tolerance + 60);
    let nonce = NonceClaim {
        nonce: nonce.to_owned(),
        keep_until,
    };
    Ok((merchant, nonce))
}

/// Remembers a read's nonce now; a nonce seen before is refused.
pub async fn remember(
    store: &dyn Store,
    merchant_id: &str,
    nonce: &NonceClaim,
    clock: &Clock,
) -> Result<(), ApiError> {
    if store
        .remember_nonce(merchant_id, &nonce.nonce, clock.now(), nonce.keep_until)
        .await?
    {
        Ok(())
    } else {
        Err(nonce_reused())
    }
}

/// The answer to a replayed nonce.
pub(crate) fn nonce_reused() -> ApiError {
    ApiError::auth(
        ErrorCode::NonceReused,
        "this Moongate-Nonce was already used",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_string_layout() {
        let s = canonical_string("POST", "/v1/payments?x=1", "1700000000", "nonce", b"");
        assert_eq!(
            s,
            "POST\n/v1/payments?x=1\n1700000000\nnonce\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
        );
        // RFC 4231 test case 2 shape: HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
