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

    /// Renders a request for hyper.
    fn hyper_request(req: &HttpRequest) -> Result<hyper::Request<Full<Bytes>>, CallError> {
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
        builder
            .body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| CallError::NotSent(format!("bad request: {e}")))
    }

    /// Sends a request and waits for the answer's head; a connect failure means "not sent".
    async fn request(
        &self,
        req: &HttpRequest,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CallError> {
        let request = Self::hyper_request(req)?;
        self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                CallError::NotSent(format!("connect: {e}"))
            } else {
                CallError::Unknown(format!("transport: {e}"))
            }
        })
    }

    /// Sends one request and reads the whole (bounded) answer.
    pub async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, CallError> {
        let call = async {
            let response = self.request(req).await?;
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

/// A body streamed to a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// HTTP status.
    pub status: u16,
    /// Bytes written.
    pub bytes: u64,
    /// SHA-256 of the body (hex).
    pub sha256: String,
    /// SHA-1 of the body (hex; WeChat Pay states bills' SHA-1).
    pub sha1: String,
    /// The first bytes of the body (to explain a non-file answer).
    pub head: Vec<u8>,
}

impl Outbound {
    /// Sends one request and streams the answer's body into `path` (created or truncated),
    /// hashing it on the way; at most `max_bytes`, within `timeout` for the whole download.
    pub async fn download_to(
        &self,
        req: &HttpRequest,
        path: &std::path::Path,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Downloaded, CallError> {
        use tokio::io::AsyncWriteExt;
        let call = async {
            let response = self.request(req).await?;
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut file = crate::private_fs::create_async(path).await.map_err(|e| {
                CallError::Unknown(format!("cannot create {}: {e}", path.display()))
            })?;
            let mut sha256 = ring::digest::Context::new(&ring::digest::SHA256);
            let mut sha1 = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
            let mut bytes = 0_u64;
            let mut head = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| CallError::Unknown(format!("reading body: {e}")))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                bytes += data.len() as u64;
                if bytes > max_bytes {
                    return Err(CallError::Unknown(format!(
                        "body larger than {max_bytes} bytes"
                    )));
                }
                if head.len() < 512 {
                    head.extend(data.iter().take(512 - head.len()));
                }
                sha256.update(&data);
                sha1.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|e| CallError::Unknown(format!("writing {}: {e}", path.display())))?;
            }
            file.sync_all()
                .await
                .map_err(|e| CallError::Unknown(format!("writing {}: {e}", path.display())))?;
            Ok(Downloaded {
                status,
                bytes,
                sha256: hex::encode(sha256.finish()),
                sha1: hex::encode(sha1.finish()),
                head,
            })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Unknown(format!(
                "download not finished within {timeout:?}"
            ))),
        }
    }
}
