//! The one outbound HTTP client: provider calls and merchant webhooks.
//!
//! rustls with the Mozilla root store verifies every HTTPS peer; plain HTTP is only reachable
//! because config validation allows it for loopback sandboxes. Failures are classified by the
//! question that matters for money: could the peer have received the request?

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};

/// Largest response body read from a peer.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a call produced no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The request never left (bad URL, DNS or connect failure): the peer did nothing.
    #[error("request not sent: {0}")]
    NotSent(String),
    /// The request may have reached the peer (timeout, reset, unreadable answer).
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

/// A pooled HTTP/1.1 client with TLS and a whole-call timeout.
#[derive(Clone, Debug)]
pub struct Outbound {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Outbound {
    /// Builds a client.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<Outbound, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Outbound { client, timeout })
    }

    /// Sends one request and reads the whole (bounded) answer.
    pub async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, CallError> {
        let method = match req.method {
            HttpMethod::Get => hyper::Method::GET,
            HttpMethod::Post => hyper::Method::POST,
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| CallError::NotSent(format!("bad request: {e}")))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::NotSent(format!("connect: {e}"))
                } else {
                    CallError::Unknown(format!("transport: {e}"))
                }
            })?;
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| CallError::Unknown(format!("reading body: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(HttpResponse {
                status,
                headers,
                body,
                received_at: time::OffsetDateTime::now_utc(),
            })
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Unknown(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}
