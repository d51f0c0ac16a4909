//! Rate limits: per merchant on requests to Moongate, per account on calls to the provider.
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

#[tokio::test]
async fn a_burst_over_the_merchant_limit_gets_429_with_headers() {
    let h = Harness::start().await;
    // Shop C: 1 request/s, burst 5. A quick run of requests meets the limit.
    let mut passed = 0;
    let mut limited = None;
    for _ in 0..10 {
        let response = h
            .shop_c
            .call(HttpMethod::Get, "/v1/payments", b"", None)
            .await
            .unwrap();
        if response.status == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status, 200);
        passed += 1;
    }
    let response = limited.expect("ten quick requests exceed a burst of 5 at 1/s");
    assert!(passed >= 5, "the burst passes first ({passed})");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(
        response.header("ratelimit-policy"),
        Some("\"merchant\";q=5;w=5")
    );
    assert_eq!(response.header("ratelimit"), Some("\"merchant\";r=0;t=1"));
    assert_eq!(response.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(response.header("x-ratelimit-remaining"), Some("0"));
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limit");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // Another merchant is not affected.
    let (status, _) = h.get(&h.shop_b, "/v1/payments").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_outbound_limit_holds_calls_back_and_says_so() {
    let h = Harness::start().await;
    let before = h.provider_calls(h.sandbox_addr).await;
    let body = |reference: &str| {
        json!({
            "amount": 100, "currency": "CNY", "method": "alipay_qr",
            "merchant_reference": reference, "description": "Tea",
        })
    };
    // Shop C's Alipay account: 1 call/s, burst 1, waits at most 100 ms for a turn; four quick
    // creates cannot all have one.
    let mut sent = 0;
    let mut throttled = 0;
    for i in 0..4 {
        let key = format!("c{i}");
        let (status, payment) = h.create_with(&h.shop_c, body(&key), &key).await;
        assert_eq!(status, 201, "{payment}");
        match payment["status"].as_str() {
            Some("requires_action") => sent += 1,
            Some("failed") => {
                assert_eq!(
                    payment["failure"]["code"], "outbound_rate_limited",
                    "{payment}"
                );
                throttled += 1;
            }
            other => panic!("unexpected status {other:?}: {payment}"),
        }
    }
    assert!(
        sent >= 1 && throttled >= 1,
        "sent {sent}, throttled {throttled}"
    );
    // The sandbox saw exactly the calls that were let through.
    assert_eq!(h.provider_calls(h.sandbox_addr).await, before + sent);
}
