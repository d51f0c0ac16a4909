//! The demo storefront: a one-product shop that integrates Moongate as a real storefront
//! would. Its server signs `POST /v1/checkouts` with the merchant key (never the browser),
//! sends the shopper to the cashier URL, shows the order when the shopper comes back, and
//! receives and verifies Moongate's signed webhooks, which it lists at `/webhooks`.
//!
//! `moongate demo` serves it on the webhook receiver's address; the browser tests drive the
//! whole journey through it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use moongate_contract::HttpMethod;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::client::MerchantClient;
use crate::text::escape;

/// Verifies a `Moongate-Signature` header (`t=…,v1=…[,v1=…]`) against a webhook secret.
pub fn verify_webhook(header: &str, body: &[u8], secret: &[u8], now: i64, tolerance: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(t) = timestamp else { return false };
    if (now - t).abs() > tolerance {
        return false;
    }
    let Ok(body) = std::str::from_utf8(body) else {
        return false;
    };
    let expected = crate::client::sign(secret, &format!("{t}.{body}"));
    signatures
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
}

/// The product on sale.
const PRODUCT: &str = "明前龙井 West Lake Longjing tea, 250 g";
/// Its price in fen.
const PRICE: i64 = 8800;

/// One webhook as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedWebhook {
    /// When it arrived.
    pub received_at: OffsetDateTime,
    /// Event type, e.g. `payment.succeeded`.
    pub kind: String,
    /// The object's id.
    pub object_id: String,
    /// The object's `metadata.checkout_id`, if any.
    pub checkout_id: Option<String>,
    /// Whether the signature verified (unverified ones are refused and logged as such).
    pub verified: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Order reference → checkout id.
    orders: BTreeMap<String, String>,
    webhooks: Vec<LoggedWebhook>,
    next_order: u64,
}

/// The shop.
#[derive(Debug)]
pub struct Storefront {
    client: MerchantClient,
    base_url: String,
    webhook_secret: Vec<u8>,
    print: bool,
    inner: Mutex<Inner>,
}

impl Storefront {
    /// A shop calling Moongate with `client`, reachable by shoppers at `base_url`, checking
    /// webhooks with `webhook_secret`; `print` echoes webhooks on stdout (the demo).
    pub fn new(
        client: MerchantClient,
        base_url: &str,
        webhook_secret: &[u8],
        print: bool,
    ) -> Arc<Storefront> {
        Arc::new(Storefront {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            webhook_secret: webhook_secret.to_vec(),
            print,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Webhooks received so far.
    pub fn webhooks(&self) -> Vec<LoggedWebhook> {
        self.lock().webhooks.clone()
    }
}

/// The shop's routes: `/`, `POST /checkout`, `/orders/{reference}`, `POST/GET /webhooks`.
pub fn router(shop: Arc<Storefront>) -> Router {
    Router::new()
        .route("/", get(home))
        .route("/checkout", post(checkout))
        .route("/orders/{reference}", get(order))
        .route("/webhooks", post(receive_webhook).get(webhook_log))
        .with_state(shop)
}

fn page(title: &str, body: &str) -> Response {
    let mut response = Html(format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:560px;margin:0 auto;padding:16px;color:#1d2129}}\
         .card{{border:1px solid #e5e6eb;border-radius:12px;padding:20px;margin:12px 0}}\
         button{{background:#c0392b;color:#fff;border:0;border-radius:8px;padding:12px 20px;font-size:17px;cursor:pointer}}\
         table{{border-collapse:collapse;width:100%;font-size:14px}}td,th{{border-bottom:1px solid #e5e6eb;padding:6px;text-align:left;overflow-wrap:anywhere}}\
         .ok{{color:#00a650}}.bad{{color:#cb2634}}</style></head><body>\
         <p><a href=\"/\">茶舍 Demo Tea House</a> · <a href=\"/webhooks\">Webhook log</a></p>{body}</body></html>",
        escape(title)
    ))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn home() -> Response {
    page(
        "Demo Tea House",
        &format!(
            "<section class=\"card\"><h1>{}</h1><p id=\"price\">¥{}</p>\
             <form method=\"post\" action=\"/checkout\"><button id=\"buy\" type=\"submit\">去结算 Checkout</button></form></section>\
             <p>The checkout button asks this shop's server to create a Moongate checkout (a signed \
             <code>POST /v1/checkouts</code>) and sends you to Moongate's cashier page.</p>",
            escape(PRODUCT),
            moongate_contract::Money::new(PRICE, moongate_contract::Currency::CNY)
                .to_decimal_string()
        ),
    )
}

fn bad_gateway(message: &str) -> Response {
    let mut response = page(
        "Checkout unavailable",
        &format!(
            "<p class=\"bad\">The payment service did not answer as expected: {}</p>",
            escape(message)
        ),
    );
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn checkout(State(shop): State<Arc<Storefront>>) -> Response {
    let reference = {
        let mut inner = shop.lock();
        inner.next_order += 1;
        format!(
            "tea-{}-{}",
            OffsetDateTime::now_utc().unix_timestamp(),
            inner.next_order
        )
    };
    let body = json!({
        "amount": PRICE,
        "currency": "CNY",
        "merchant_reference": reference,
        "description": PRODUCT,
        "return_url": format!("{}/orders/{reference}", shop.base_url),
        "cancel_url": format!("{}/", shop.base_url),
    });
    let answer = shop
        .client
        .call(
            HttpMethod::Post,
            "/v1/checkouts",
            body.to_string().as_bytes(),
            Some(&reference),
        )
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => return bad_gateway(&error.to_string()),
    };
    let created: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let (Some(id), Some(url)) = (
        created.get("id").and_then(Value::as_str),
        created.get("url").and_then(Value::as_str),
    ) else {
        return bad_gateway(&format!("HTTP {}", answer.status));
    };
    shop.lock().orders.insert(reference, id.to_owned());
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

async fn order(State(shop): State<Arc<Storefront>>, Path(reference): Path<String>) -> Response {
    let checkout_id = shop.lock().orders.get(&reference).cloned();
    let Some(checkout_id) = checkout_id else {
        let mut response = page("Unknown order", "<p class=\"bad\">No such order.</p>");
        *response.status_mut() = StatusCode::NOT_FOUND;
        return response;
    };
    // Ask Moongate (signed, server side): the browser's arrival proves nothing by itself.
    let answer = shop
        .client
        .call(
            HttpMethod::Get,
            &format!("/v1/checkouts/{checkout_id}"),
            b"",
            None,
        )
        .await;
    let checkout: Value = match answer {
        Ok(answer) if answer.status == 200 => {
            serde_json::from_slice(&answer.body).unwrap_or_default()
        }
        Ok(answer) => return bad_gateway(&format!("HTTP {}", answer.status)),
        Err(error) => return bad_gateway(&error.to_string()),
    };
    let status = checkout
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("?");
    let payment = checkout
        .get("payment")
        .and_then(Value::as_str)
        .unwrap_or("");
    let headline = match status {
        "complete" => "<p class=\"ok\" id=\"order-status\" data-status=\"complete\">✓ 已付款 Paid — thank you! Your tea is on its way.</p>".to_owned(),
        other => format!(
            "<p id=\"order-status\" data-status=\"{}\">Not paid yet ({}).</p>",
            escape(other),
            escape(other)
        ),
    };
    page(
        "Your order",
        &format!(
            "<section class=\"card\"><h1>Order {}</h1>{headline}\
             <p>Checkout <code>{}</code>, payment <code id=\"payment\">{}</code></p></section>",
            escape(&reference),
            escape(&checkout_id),
            escape(payment)
        ),
    )
}

async fn receive_webhook(
    State(shop): State<Arc<Storefront>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = headers
        .get("moongate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = OffsetDateTime::now_utc();
    let verified = verify_webhook(
        header,
        &body,
        &shop.webhook_secret,
        now.unix_timestamp(),
        300,
    );
    let event: Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let logged = LoggedWebhook {
        received_at: now,
        kind: text("/type"),
        object_id: text("/data/object/id"),
        checkout_id: event
            .pointer("/data/object/metadata/checkout_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        verified,
    };
    if shop.print {
        if verified {
            println!(
                "  [webhook] {} {} (signature ok)",
                logged.kind, logged.object_id
            );
        } else {
            println!("  [webhook] REJECTED: bad signature");
        }
    }
    shop.lock().webhooks.push(logged);
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn webhook_log(State(shop): State<Arc<Storefront>>) -> Response {
    let rows: String = shop
        .webhooks()
        .iter()
        .rev()
        .map(|w| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                {
                    let t = w.received_at.to_offset(time::UtcOffset::UTC);
                    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
                },
                escape(&w.kind),
                escape(&w.object_id),
                escape(w.checkout_id.as_deref().unwrap_or("")),
                if w.verified { "ok" } else { "bad" },
                if w.verified { "verified" } else { "REJECTED" }
            )
        })
        .collect();
    page(
        "Webhook log",
        &format!(
            "<h1>Webhooks received</h1><table id=\"webhooks\"><tr><th>UTC</th><th>Event</th><th>Object</th><th>Checkout</th><th>Signature</th></tr>{rows}</table>"
        ),
    )
}
