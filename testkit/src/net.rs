//! The test doubles' own HTTP client: sandboxes post notifications with it and the signing
//! client calls the gateway. rustls with the Mozilla roots for HTTPS, plain HTTP otherwise;
//! failures say whether the request could have reached the peer.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};

/// How long an idle pooled connection is kept for the next request.
const IDLE_TIMEOUT: Duration = Duration::from_millis(150);

/// Largest answer read.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// Why a request got no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// It never left (bad URL, connect failure).
    NotSent(String),
    /// It may have arrived (timeout, reset, unreadable answer).
    Unknown(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::NotSent(why) => write!(f, "request not sent: {why}"),
            CallError::Unknown(why) => write!(f, "outcome unknown: {why}"),
        }
    }
}

impl std::error::Error for CallError {}

/// A pooled HTTP/1.1 client with a whole-call timeout.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose calls give up after `timeout`.
    pub fn new(connect_timeout: Duration, timeout: Duration) -> Result<HttpClient, String> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // Idle connections are not kept long: a server may close an idle keep-alive connection
        // at any moment (Moongate does after its header read timeout, 1 s in the test
        // harness), and a request written to one that is closing fails with no answer.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(https);
        Ok(HttpClient { client, timeout })
    }

    /// Sends `req` and reads the whole answer.
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
        let exchange = async {
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
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
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
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(CallError::Unknown(format!(
                    "no answer within {:?}",
                    self.timeout
                )))
            })
    }
}
