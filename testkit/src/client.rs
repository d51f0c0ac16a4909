//! A small signing client for Moongate's API: the demo's walkthrough and the black-box tests
//! use it, and it is the reference for storefront integrations (see the README for shell and
//! Python versions).

use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};
use time::OffsetDateTime;

pub use crate::net::CallError;
use crate::net::HttpClient;

/// Called with every request sent and the answer received (tests check answers against the
/// API's contract with one).
pub type Observer = std::sync::Arc<dyn Fn(&HttpRequest, &HttpResponse) + Send + Sync>;

/// Signs and sends requests as one merchant key.
#[derive(Clone)]
pub struct MerchantClient {
    /// e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Key id.
    pub key_id: String,
    /// Shared secret.
    pub secret: Vec<u8>,
    http: HttpClient,
    observer: Option<Observer>,
    /// Added to the clock requests are signed with ([`MerchantClient::set_clock_skew`]);
    /// clones share it.
    clock_skew_secs: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl std::fmt::Debug for MerchantClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantClient")
            .field("base_url", &self.base_url)
            .field("key_id", &self.key_id)
            .field("observed", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl MerchantClient {
    /// A client.
    pub fn new(base_url: &str, key_id: &str, secret: &[u8]) -> Result<MerchantClient, String> {
        let http = HttpClient::new(
            std::time::Duration::from_secs(3),
            std::time::Duration::from_secs(30),
        )?;
        Ok(MerchantClient {
            base_url: base_url.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            secret: secret.to_vec(),
            http,
            observer: None,
            clock_skew_secs: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    /// The same client, showing every exchange to `observer`.
    pub fn observed(mut self, observer: Observer) -> MerchantClient {
        self.observer = Some(observer);
        self
    }

    /// Signs from now on with a clock `secs` off the system's (a storefront whose clock is
    /// wrong, or one that follows a gateway's stepped clock in a test).
    pub fn set_clock_skew(&self, secs: i64) {
        self.clock_skew_secs
            .store(secs, std::sync::atomic::Ordering::SeqCst);
    }

    /// Builds the signed request (exposed so tests can tamper with it).
    pub fn signed(
        &self,
        method: HttpMethod,
        path_and_query: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
        timestamp: i64,
        nonce: &str,
    ) -> HttpRequest {
        let ts = timestamp.to_string();
        let canonical = canonical_string(method.as_str(), path_and_query, &ts, nonce, body);
        let mut headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("moongate-key-id".to_owned(), self.key_id.clone()),
            ("moongate-timestamp".to_owned(), ts),
            ("moongate-nonce".to_owned(), nonce.to_owned()),
            (
                "moongate-signature".to_owned(),
                sign(&self.secret, &canonical),
            ),
        ];
        if let Some(key) = idempotency_key {
            headers.push(("idempotency-key".to_owned(), key.to_owned()));
        }
        HttpRequest {
            method,
            url: format!("{}{path_and_query}", self.base_url),
            headers,
            body: body.to_vec(),
        }
    }

    /// Sends a raw request.
    pub async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, CallError> {
        let response = self.http.send(request).await?;
        if let Some(observer) = &self.observer {
            observer(request, &response);
        }
        Ok(response)
    }

    /// Signs with a fresh nonce and the current time, then sends.
    pub async fn call(
        &self,
        method: HttpMethod,
        path_and_query: &str,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<HttpResponse, CallError> {
        let nonce = crate::text::new_id("n");
        let request = self.signed(
            method,
            path_and_query,
            body,
            idempotency_key,
            OffsetDateTime::now_utc().unix_timestamp()
                + self
                    .clock_skew_secs
                    .load(std::sync::atomic::Ordering::SeqCst),
            &nonce,
        );
        self.send(&request).await
    }
}

/// What a request signs (README "Authentication"): method, path and query, timestamp and
/// nonce, then the body's SHA-256 in lower-case hex, one per line, each line ending in `\n`.
/// Written from the documented rule, not taken from the gateway's verifier.
pub fn canonical_string(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(body));
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{digest}\n")
}

/// HMAC-SHA256 of `message` under `secret`, lower-case hex (request and webhook signatures).
pub fn sign(secret: &[u8], message: &str) -> String {
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}
