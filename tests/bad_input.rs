//! Bad requests get the one JSON error shape with a stable code and the right parameter
//! (issue 18, each reproduced against the demo before the fix). The harness's client also
//! checks every answer here against `openapi.yaml`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Harness;
use moongate_contract::HttpMethod;
use serde_json::{Value, json};

fn error(body: &[u8]) -> Value {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    value["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_refusals_use_the_one_error_shape() {
    let h = Harness::start().await;
    // A method the route does not serve: 405 with Allow, in the error shape.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for method in ["DELETE", "PUT"] {
        let mut stream = tokio::net::TcpStream::connect(h.gateway.addr)
            .await
            .unwrap();
        stream
            .write_all(
                format!("{method} /v1/payments HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
        assert!(text.to_lowercase().contains("\r\nallow: "), "{text}");
        assert!(text.contains(r#""code":"method_not_allowed""#), "{text}");
    }
    // A path that is not valid UTF-8 once decoded: 400 in the error shape, not text/plain.
    let response = h
        .shop_a
        .call(HttpMethod::Get, "/v1/payments/%ff%fe", b"", None)
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(error(&response.body)["code"], "request_malformed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_named_and_deceptive_text_refused() {
    let h = Harness::start().await;
    let create = |body: Value, key: &'static str| {
        let client = h.shop_a.clone();
        async move {
            let response = client
                .call(
                    HttpMethod::Post,
                    "/v1/payments",
                    body.to_string().as_bytes(),
                    Some(key),
                )
                .await
                .unwrap();
            (response.status, error(&response.body))
        }
    };
    // Over Alipay's per-trade maximum: the parameter is named (it was "").
    let (status, e) = create(
        json!({"amount": 10_000_000_001_i64, "currency": "CNY", "method": "alipay_qr",
               "merchant_reference": "o-1", "description": "Tea"}),
        "big-1",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        (e["code"].as_str(), e["param"].as_str()),
        (Some("parameter_invalid"), Some("amount"))
    );
    // A right-to-left override would make the cashier show "TEA 0.01¥" as "¥10.0 AET".
    for (field, value) in [
        ("description", "TEA \u{202E}0.01¥"),
        ("merchant_reference", "order\u{2066}-7"),
    ] {
        let mut body = json!({"amount": 100, "currency": "CNY", "method": "alipay_qr",
                              "merchant_reference": "o-2", "description": "Tea"});
        body[field] = json!(value);
        let (status, e) = create(
            body,
            if field == "description" {
                "bidi-1"
            } else {
                "bidi-2"
            },
        )
        .await;
        assert_eq!(status, 400, "{field}");
        assert_eq!(e["param"], field);
    }
    // A non-ASCII Idempotency-Key is invalid, not missing.
    let mut request = h.shop_a.signed(
        HttpMethod::Post,
        "/v1/payments",
        b"{}",
        None,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        "nonce-nonascii-0001",
    );
    request
        .headers
        .push(("idempotency-key".to_owned(), "clé-1".to_owned()));
    let response = h.shop_a.send(&request).await.unwrap();
    assert_eq!(response.status, 400);
    assert_eq!(error(&response.body)["code"], "idempotency_key_invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_and_reconciliation_dates_say_what_is_wrong() {
    let h = Harness::start().await;
    let id = h.paid_payment(500, "full-1").await;
    let (status, _) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            "",
            "full-r1",
        )
        .await;
    assert_eq!(status, 201);
    // Alipay refunds at once: the payment is now refunded in full.
    // Nothing left: said so (it was "amount must be a positive integer").
    let (status, e) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            "",
            "full-r2",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(e["error"]["code"], "refund_exceeds_payment");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("nothing is left")
    );
    // A future day, or one long before any provider keeps statements: 400 on `date`.
    let tomorrow = moongate_contract::statement::beijing_day(time::OffsetDateTime::now_utc())
        .next_day()
        .unwrap()
        .next_day()
        .unwrap();
    for (date, key) in [
        (
            moongate::reconcile::run::format_day(tomorrow),
            "recon-future",
        ),
        ("1900-01-01".to_owned(), "recon-1900"),
    ] {
        let (status, e) = h
            .post(
                &h.shop_a,
                "/v1/reconciliations",
                &json!({"account": "alipay_main", "date": date}).to_string(),
                key,
            )
            .await;
        assert_eq!(status, 400, "{date}: {e}");
        assert_eq!(e["error"]["param"], "date", "{date}");
    }
}
