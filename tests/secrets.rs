//! No secret ever reaches a log line or an error: a full flow runs with every level of every
//! crate's logging on, and the captured output is searched for each secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{
    APIV3_KEY_A, APIV3_KEY_B, Harness, SHOP_A_SECRET, SHOP_B_SECRET, V2_KEY_A, WEBHOOK_SECRET_NEW,
    WEBHOOK_SECRET_OLD, fixtures,
};
use moongate_testkit::client::MerchantClient;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A distinctive run of a PEM key's base64 body (its second line).
fn key_marker(file: &str) -> String {
    let text = std::fs::read_to_string(fixtures().join("keys").join(file)).unwrap();
    text.lines().nth(2).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_or_error() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let h = Harness::start().await;
    let mut errors = Vec::new();
    // Both wallets, paid and partly refunded.
    let alipay = h.paid_payment(1200, "s1").await;
    let (_, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{alipay}/refunds"),
            r#"{"amount":200}"#,
            "s1-r",
        )
        .await;
    errors.push(refund.to_string());
    let (_, wx) = h
        .create_with(
            &h.shop_a,
            json!({"amount": 900, "currency": "CNY", "method": "wechat_native",
                   "merchant_reference": "s2", "description": "Tea"}),
            "s2",
        )
        .await;
    let wx_id = wx["id"].as_str().unwrap().to_owned();
    h.wechat("/sandbox/pay", json!({"out_trade_no": wx_id}))
        .await;
    h.wait_for(&h.shop_a, &wx_id, "succeeded").await;
    let (_, wx_refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{wx_id}/refunds"),
            "",
            "s2-r",
        )
        .await;
    errors.push(wx_refund.to_string());
    // A payment code (the v2 key signs it) and the errors an attacker or a bug would cause.
    let (_, code) = h
        .create_with(
            &h.shop_a,
            json!({"amount": 300, "currency": "CNY", "method": "payment_code",
                   "merchant_reference": "s3", "description": "Till",
                   "payer": {"payment_code": "134567890123456789"}}),
            "s3",
        )
        .await;
    errors.push(code.to_string());
    let base = format!("http://{}", h.gateway.addr);
    let impostor = MerchantClient::new(&base, "shop_a_k1", b"not-the-secret-0123456789").unwrap();
    let (_, denied) = h.get(&impostor, "/v1/payments").await;
    errors.push(denied.to_string());
    let (_, invalid) = h
        .post(&h.shop_b, "/v1/payments", r#"{"amount":-1}"#, "s4")
        .await;
    errors.push(invalid.to_string());
    let forged = h
        .post_notification("shop_a", "app_id=1&sign=AAAA&notify_type=x")
        .await;
    errors.push(String::from_utf8_lossy(&forged.body).into_owned());
    // Let webhooks and notifications finish.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.len() > 10_000,
        "the flow logged ({} bytes)",
        logs.len()
    );
    assert!(logs.contains("provider_call"), "provider calls were traced");
    let secrets = [
        ("shop A signing secret", SHOP_A_SECRET.to_owned()),
        ("shop B signing secret", SHOP_B_SECRET.to_owned()),
        ("webhook secret (old)", WEBHOOK_SECRET_OLD.to_owned()),
        ("webhook secret (new)", WEBHOOK_SECRET_NEW.to_owned()),
        ("APIv3 key A", APIV3_KEY_A.to_owned()),
        ("APIv3 key B", APIV3_KEY_B.to_owned()),
        ("API v2 key", V2_KEY_A.to_owned()),
        (
            "Alipay app private key",
            key_marker("nodejs-sdk-app-private-key.pem"),
        ),
        (
            "WeChat Pay merchant private key",
            key_marker("wechatpay-go-merchant-private-key.pem"),
        ),
        ("payment code", "134567890123456789".to_owned()),
    ];
    for (what, secret) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "{what} appears in the logs"
        );
        for error in &errors {
            assert!(
                !error.contains(secret.as_str()),
                "{what} appears in an error: {error}"
            );
        }
    }
}
