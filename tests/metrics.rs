//! Prometheus metrics on the admin listener.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::Harness;
use moongate_contract::HttpMethod;

async fn scrape(h: &Harness) -> String {
    let admin = h
        .gateway
        .admin_addr
        .expect("the harness serves the admin endpoints");
    let response = h.http_get(&format!("http://{admin}/metrics")).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    String::from_utf8(response.body).unwrap()
}

/// The value of one sample line, by its exact name and labels.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn requests_provider_calls_limits_notifications_and_webhooks_are_counted() {
    let h = Harness::start().await;
    let paid = h.paid_payment(300, "m1").await;
    // Shop C meets its request limit.
    for _ in 0..10 {
        let response = h
            .shop_c
            .call(HttpMethod::Get, "/v1/payments", b"", None)
            .await
            .unwrap();
        if response.status == 429 {
            break;
        }
    }
    // Webhooks are delivered in the background.
    let mut text = scrape(&h).await;
    for _ in 0..100 {
        if sample(
            &text,
            r#"moongate_webhook_deliveries_total{source="shop_a",outcome="delivered"}"#,
        )
        .is_some_and(|n| n >= 3.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(&h).await;
    }
    for (series, at_least) in [
        (
            r#"moongate_http_requests_total{route="/v1/payments",method="POST",status="201"}"#,
            1.0,
        ),
        (
            r#"moongate_http_requests_total{route="/v1/payments/{id}",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"moongate_http_requests_total{route="/v1/payments",method="GET",status="429"}"#,
            1.0,
        ),
        (
            r#"moongate_provider_calls_total{provider="alipay",merchant="shop_a",account="alipay_main",operation="create",outcome="answered"}"#,
            1.0,
        ),
        (
            r#"moongate_provider_call_duration_seconds_count{provider="alipay",merchant="shop_a",account="alipay_main",operation="create"}"#,
            1.0,
        ),
        (
            r#"moongate_rate_limited_total{scope="merchant",id="shop_c"}"#,
            1.0,
        ),
        (
            r#"moongate_provider_notifications_total{source="alipay",outcome="accepted"}"#,
            1.0,
        ),
        (
            r#"moongate_webhook_deliveries_total{source="shop_a",outcome="delivered"}"#,
            3.0,
        ),
    ] {
        let value =
            sample(&text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"));
        assert!(value >= at_least, "{series} = {value}");
    }
    // Label values are routes, not raw paths: no payment id appears.
    assert!(!text.contains(&paid), "{text}");
    // The public listener does not serve metrics.
    let (status, _) = h.get(&h.shop_a, "/metrics").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_admin_token_guards_every_admin_route_but_health_and_sweeps_run_one_at_a_time() {
    let h = Harness::start().await;
    let admin = h.gateway.admin_addr.unwrap();
    let token = "admin-token-0123456789abcdef";
    let dir = h.config_path.parent().unwrap();
    std::fs::write(dir.join("admin.secret"), token).unwrap();
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let anchor = "[server]\n";
    assert!(text.contains(anchor));
    let with_token = text.replacen(
        anchor,
        "[server]\nadmin_token = { file = \"admin.secret\" }\n",
        1,
    );
    std::fs::write(&h.config_path, with_token).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    let call = |method: HttpMethod, path: &str, bearer: Option<&str>| {
        let request = moongate_contract::HttpRequest {
            method,
            url: format!("http://{admin}{path}"),
            headers: bearer
                .map(|t| vec![("authorization".to_owned(), format!("Bearer {t}"))])
                .unwrap_or_default(),
            body: Vec::new(),
        };
        let http = h.http.clone();
        async move { http.send(&request).await.unwrap().status }
    };
    assert_eq!(call(HttpMethod::Get, "/healthz", None).await, 200);
    for path in ["/metrics", "/circuits", "/reconciliations"] {
        assert_eq!(call(HttpMethod::Get, path, None).await, 401, "{path}");
        assert_eq!(
            call(HttpMethod::Get, path, Some("wrong-token-0123456789abc")).await,
            401
        );
        assert_eq!(
            call(HttpMethod::Get, path, Some(token)).await,
            200,
            "{path}"
        );
    }
    assert_eq!(call(HttpMethod::Post, "/janitor/sweep", None).await, 401);
    // One sweep at a time.
    let running = h.gateway.gateway.sweep_lock.lock().await;
    assert_eq!(
        call(HttpMethod::Post, "/janitor/sweep", Some(token)).await,
        409
    );
    drop(running);
    assert_eq!(
        call(HttpMethod::Post, "/janitor/sweep", Some(token)).await,
        200
    );
}
