//! Black-box tests: the gateway and the strict Alipay sandbox on loopback, driven over HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{
    APP_ID, Harness, ISV_APP_AUTH_TOKEN, ISV_MERCHANT_APP_ID, WEBHOOK_SECRET_NEW,
    WEBHOOK_SECRET_OLD, alipay_sn,
};
use moongate_contract::HttpMethod;
use moongate_testkit::storefront::verify_webhook;
use serde_json::{Value, json};

on_both_ledgers!(
    qr_payment_end_to_end_with_signed_webhooks,
    redirect_methods_answer_a_signed_cashier_url,
    partial_and_full_refunds_never_exceed_the_payment,
    cancel_closes_unpaid_payments_only,
    bad_signatures_stale_timestamps_replayed_nonces_and_other_merchants_are_rejected,
    idempotent_replay_conflicting_reuse_and_concurrent_reuse,
    tampered_notifications_are_rejected_and_leave_the_ledger_unchanged,
    duplicate_notifications_record_one_event,
    invalid_requests_get_stable_codes_and_their_parameter,
    list_payments_pages_with_a_cursor,
    a_late_payment_after_cancel_is_still_recorded,
    events_show_their_delivery_log_and_can_be_resent,
    alipay_certificate_mode_pays_refunds_and_survives_a_rotation,
    an_isv_served_merchant_pays_and_refunds_under_its_authorisation,
);

async fn qr_payment_end_to_end_with_signed_webhooks(h: Harness) {
    let (status, payment) = h.create(&h.shop_a, 8888, "e2e-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action");
    assert_eq!(payment["amount"], 8888);
    assert_eq!(payment["currency"], "CNY");
    assert_eq!(payment["next_action"]["type"], "display_qr");
    let qr = payment["next_action"]["qr_data"].as_str().unwrap();
    assert!(qr.starts_with("https://qr.alipay.com/bax"), "{qr}");
    let id = payment["id"].as_str().unwrap();

    let paid = h.sandbox("/sandbox/pay", json!({"out_trade_no": id})).await;
    assert_eq!(paid.status, 200);
    let payment = h.wait_for(&h.shop_a, id, "succeeded").await;
    assert!(
        payment["provider"]["transaction_id"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(payment["next_action"], Value::Null);

    // The sandbox saw exactly `success` on the first attempt.
    let sent = h.sandbox_notifications(id).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["acknowledged"], true);
    assert_eq!(sent[0]["attempts"], 1);

    assert_eq!(
        h.event_kinds(id).await,
        [
            "payment.created",
            "payment.requires_action",
            "payment.succeeded"
        ]
    );

    // The merchant receives the succeeded event, signed once per active secret.
    let mut delivered = None;
    for _ in 0..100 {
        delivered = h
            .webhooks
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.body.contains("\"payment.succeeded\"") && d.body.contains(id))
            .cloned();
        if delivered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = delivered.expect("payment.succeeded webhook delivered");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(delivered.signature.matches("v1=").count(), 2);
    assert!(verify_webhook(
        &delivered.signature,
        delivered.body.as_bytes(),
        WEBHOOK_SECRET_OLD.as_bytes(),
        now,
        300
    ));
    assert!(verify_webhook(
        &delivered.signature,
        delivered.body.as_bytes(),
        WEBHOOK_SECRET_NEW.as_bytes(),
        now,
        300
    ));
    assert!(!verify_webhook(
        &delivered.signature,
        delivered.body.as_bytes(),
        b"some-other-secret-000000",
        now,
        300
    ));
    let tampered = delivered.body.replace("succeeded", "failed");
    assert!(!verify_webhook(
        &delivered.signature,
        tampered.as_bytes(),
        WEBHOOK_SECRET_NEW.as_bytes(),
        now,
        300
    ));
    let event: Value = serde_json::from_str(&delivered.body).unwrap();
    assert_eq!(event["data"]["object"]["status"], "succeeded");
    assert_eq!(event["id"], delivered.event_id);
}

async fn redirect_methods_answer_a_signed_cashier_url(h: Harness) {
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "alipay_wap", "merchant_reference": "r",
        "description": "Tea", "return_url": "https://shop.example/back"
    });
    let (status, payment) = h
        .post(&h.shop_a, "/v1/payments", &body.to_string(), "wap-1")
        .await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action");
    assert_eq!(payment["next_action"]["type"], "redirect");
    let url = payment["next_action"]["url"].as_str().unwrap();
    assert!(url.contains("method=alipay.trade.wap.pay"), "{url}");
    // The sandbox accepts the signed URL and renders its cashier.
    let request = moongate_contract::HttpRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: vec![],
        body: vec![],
    };
    let page = h.http.send(&request).await.unwrap();
    let page = String::from_utf8_lossy(&page.body);
    assert!(page.contains("Alipay sandbox cashier"), "{page}");
    // A tampered URL is refused with Alipay's signature error.
    let request = moongate_contract::HttpRequest {
        method: HttpMethod::Get,
        url: url.replace("total_amount%22%3A%221.00", "total_amount%22%3A%220.01"),
        headers: vec![],
        body: vec![],
    };
    let refused = h.http.send(&request).await.unwrap();
    let refused = String::from_utf8_lossy(&refused.body);
    assert!(refused.contains("isv.invalid-signature"), "{refused}");
}

async fn partial_and_full_refunds_never_exceed_the_payment(h: Harness) {
    let id = h.paid_payment(10_000, "refund-1").await;

    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":3000,"reason":"one cup broken"}"#,
            "r-1",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    assert_eq!(refund["amount"], 3000);
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["amount_refunded"], 3000);

    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":7001}"#,
            "r-2",
        )
        .await;
    assert_eq!(status, 400, "{refund}");
    assert_eq!(refund["error"]["code"], "refund_exceeds_payment");

    // No amount: refund the rest.
    let (status, refund) = h
        .post(&h.shop_a, &format!("/v1/payments/{id}/refunds"), "", "r-3")
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["amount"], 7000);
    assert_eq!(refund["status"], "succeeded");
    let (status, fetched) = h
        .get(
            &h.shop_a,
            &format!("/v1/refunds/{}", refund["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["status"], "succeeded");
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["amount_refunded"], 10_000);
    assert_eq!(payment["status"], "succeeded");

    let (status, error) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":1}"#,
            "r-4",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "refund_exceeds_payment");

    // An unpaid payment cannot be refunded.
    let (_, unpaid) = h.create(&h.shop_a, 500, "refund-unpaid").await;
    let (status, error) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{}/refunds", unpaid["id"].as_str().unwrap()),
            "",
            "r-5",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "payment_not_refundable");
}

async fn cancel_closes_unpaid_payments_only(h: Harness) {
    // Never scanned: Alipay has no trade, the payment is canceled.
    let (_, payment) = h.create(&h.shop_a, 100, "close-1").await;
    let id = payment["id"].as_str().unwrap();
    let (status, canceled) = h
        .post(&h.shop_a, &format!("/v1/payments/{id}/cancel"), "", "c-1")
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");

    // Scanned, not paid: closed at Alipay; a later pay attempt fails there.
    let (_, payment) = h.create(&h.shop_a, 100, "close-2").await;
    let id = payment["id"].as_str().unwrap();
    assert_eq!(
        h.sandbox("/sandbox/scan", json!({"out_trade_no": id}))
            .await
            .status,
        200
    );
    let (status, canceled) = h
        .post(&h.shop_a, &format!("/v1/payments/{id}/cancel"), "", "c-2")
        .await;
    assert_eq!(status, 200, "{canceled}");
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(
        h.sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await
            .status,
        409
    );

    // Paid: not cancelable.
    let paid = h.paid_payment(100, "close-3").await;
    let (status, error) = h
        .post(&h.shop_a, &format!("/v1/payments/{paid}/cancel"), "", "c-3")
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "payment_not_cancelable");
}

async fn bad_signatures_stale_timestamps_replayed_nonces_and_other_merchants_are_rejected(
    h: Harness,
) {
    let (_, payment) = h.create(&h.shop_a, 100, "auth-1").await;
    let id = payment["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/payments/{id}");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();

    // Bad signature: signed for another path.
    let mut request = h.shop_a.signed(
        HttpMethod::Get,
        "/v1/payments",
        b"",
        None,
        now,
        "nonce-aaaaaaaaaaaa-1",
    );
    request.url = format!("{}{path}", h.shop_a.base_url);
    let response = h.shop_a.send(&request).await.unwrap();
    assert_eq!(response.status, 401);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "signature_invalid");
    assert_eq!(error["error"]["type"], "authentication_error");

    // Wrong secret.
    let forger = common::client(&h.shop_a.base_url, "shop_a_k1", "not-the-secret-000000000");
    let response = forger
        .call(HttpMethod::Get, &path, b"", None)
        .await
        .unwrap();
    assert_eq!(response.status, 401);

    // Stale timestamp (6 minutes old), correctly signed.
    let request = h.shop_a.signed(
        HttpMethod::Get,
        &path,
        b"",
        None,
        now - 360,
        "nonce-aaaaaaaaaaaa-2",
    );
    let response = h.shop_a.send(&request).await.unwrap();
    assert_eq!(response.status, 401);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "timestamp_out_of_window");

    // Replayed nonce.
    let request = h.shop_a.signed(
        HttpMethod::Get,
        &path,
        b"",
        None,
        now,
        "nonce-aaaaaaaaaaaa-3",
    );
    assert_eq!(h.shop_a.send(&request).await.unwrap().status, 200);
    let response = h.shop_a.send(&request).await.unwrap();
    assert_eq!(response.status, 401);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "nonce_reused");

    // Missing headers.
    let mut request = h.shop_a.signed(
        HttpMethod::Get,
        &path,
        b"",
        None,
        now,
        "nonce-aaaaaaaaaaaa-4",
    );
    request
        .headers
        .retain(|(name, _)| name != "moongate-signature");
    assert_eq!(h.shop_a.send(&request).await.unwrap().status, 401);

    // Merchant B can neither see nor touch A's payment, and it looks exactly like a missing one.
    let (status, error) = h.get(&h.shop_b, &path).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "resource_missing");
    let (missing_status, missing) = h
        .get(&h.shop_b, "/v1/payments/pay_DOESNOTEXIST0000000000000")
        .await;
    assert_eq!(
        (missing_status, &missing["error"]["code"]),
        (404, &error["error"]["code"])
    );
    let (status, _) = h
        .post(&h.shop_b, &format!("{path}/cancel"), "", "b-cancel")
        .await;
    assert_eq!(status, 404);
    let (status, _) = h
        .post(&h.shop_b, &format!("{path}/refunds"), "", "b-refund")
        .await;
    assert_eq!(status, 404);
    let (_, list) = h.get(&h.shop_b, "/v1/payments").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (_, payment) = h.get(&h.shop_a, &path).await;
    assert_eq!(payment["status"], "requires_action");
}

async fn idempotent_replay_conflicting_reuse_and_concurrent_reuse(h: Harness) {
    let body = json!({"amount": 100, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "o", "description": "Tea"}).to_string();
    let first = h
        .shop_a
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.as_bytes(),
            Some("idem-1"),
        )
        .await
        .unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = h
        .shop_a
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.as_bytes(),
            Some("idem-1"),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let (_, list) = h.get(&h.shop_a, "/v1/payments").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "one payment, not two"
    );

    // Same key, different body.
    let other = body.replace("100", "200");
    let response = h
        .shop_a
        .call(
            HttpMethod::Post,
            "/v1/payments",
            other.as_bytes(),
            Some("idem-1"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_reused");

    // Keys are per merchant: B may use the same key.
    let response = h
        .shop_b
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.as_bytes(),
            Some("idem-1"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("idempotent-replayed"), None);

    // No key at all.
    let response = h
        .shop_a
        .call(HttpMethod::Post, "/v1/payments", body.as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(response.status, 400);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_missing");

    // Concurrent reuse: the first request hangs at the provider.
    h.fault("timeout", 1).await;
    let client = h.shop_a.clone();
    let slow_body = body.clone();
    let slow = tokio::spawn(async move {
        client
            .call(
                HttpMethod::Post,
                "/v1/payments",
                slow_body.as_bytes(),
                Some("idem-2"),
            )
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = h
        .shop_a
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.as_bytes(),
            Some("idem-2"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 409);
    let error: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(error["error"]["code"], "idempotency_key_in_use");
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 201);
    let payment: Value = serde_json::from_slice(&slow.body).unwrap();
    assert_eq!(payment["status"], "unknown");
}

async fn tampered_notifications_are_rejected_and_leave_the_ledger_unchanged(h: Harness) {
    let paid = h.paid_payment(100, "tamper-paid").await;
    let genuine = h.sandbox_notifications(&paid).await[0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, victim) = h.create(&h.shop_a, 100, "tamper-victim").await;
    let victim = victim["id"].as_str().unwrap().to_owned();
    let before = h.event_kinds(&victim).await;

    // Re-pointed at another order, or with another amount: the signature no longer verifies.
    for forged in [
        genuine.replace(&paid, &victim),
        genuine.replace("total_amount=1.00", "total_amount=0.01"),
    ] {
        assert_ne!(forged, genuine);
        let response = h.post_notification("shop_a", &forged).await;
        assert_ne!(response.body, b"success");
    }
    // Unsigned.
    let unsigned: String = genuine
        .split('&')
        .filter(|p| !p.starts_with("sign="))
        .collect::<Vec<_>>()
        .join("&");
    assert_ne!(
        h.post_notification("shop_a", &unsigned).await.body,
        b"success"
    );
    // Genuine, but delivered to another merchant's endpoint.
    assert_ne!(
        h.post_notification("shop_b", &genuine).await.body,
        b"success"
    );
    // Garbage.
    assert_ne!(
        h.post_notification("shop_a", "\u{0}%%%&&==").await.body,
        b"success"
    );

    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{victim}")).await;
    assert_eq!(payment["status"], "requires_action");
    assert_eq!(h.event_kinds(&victim).await, before);
}

async fn duplicate_notifications_record_one_event(h: Harness) {
    let id = h.paid_payment(100, "dup-1").await;
    for _ in 0..3 {
        let response = h
            .sandbox("/sandbox/resend", json!({"out_trade_no": id}))
            .await;
        let reply: Value = serde_json::from_slice(&response.body).unwrap();
        assert_eq!(reply["status"], 200);
        assert_eq!(
            reply["body"], "success",
            "duplicates are acknowledged exactly"
        );
    }
    let kinds = h.event_kinds(&id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "payment.succeeded").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_garbage_errors_and_timeouts_never_look_like_success() {
    let h = Harness::start_with_timeout(1_000).await;
    for (index, mode) in ["garbage", "http_500", "timeout", "bad_signature"]
        .into_iter()
        .enumerate()
    {
        h.fault(mode, 1).await;
        let (status, payment) = h.create(&h.shop_a, 100, &format!("fault-{index}")).await;
        assert_eq!(status, 201, "{mode}: {payment}");
        assert_eq!(payment["status"], "unknown", "{mode}: {payment}");
        assert_eq!(payment["next_action"], Value::Null);
    }
    // Once Alipay behaves again, the re-check asks, finds no trade, and re-sends the same order.
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
    let (_, list) = h.get(&h.shop_a, "/v1/payments?limit=10").await;
    for payment in list["data"].as_array().unwrap() {
        assert_eq!(payment["status"], "requires_action", "{payment}");
        assert_eq!(payment["next_action"]["type"], "display_qr");
    }
    // A query answered with garbage leaves a paid-looking payment alone.
    let (_, payment) = h.create(&h.shop_a, 100, "fault-q").await;
    let id = payment["id"].as_str().unwrap();
    h.fault("garbage", 5).await;
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["status"], "requires_action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_outcome_unknown_is_resolved_by_query() {
    let h = Harness::start_with_timeout(1_000).await;
    let id = h.paid_payment(1000, "refund-unknown").await;
    h.fault("http_500", 1).await;
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":400}"#,
            "ru-1",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "unknown");
    // While unknown, the amount stays reserved.
    let (status, error) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":601}"#,
            "ru-2",
        )
        .await;
    assert_eq!(status, 400, "{error}");
    // The re-check finds no refund under that number and sends it again (same out_request_no).
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
    let (_, refund) = h
        .get(
            &h.shop_a,
            &format!("/v1/refunds/{}", refund["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(refund["status"], "succeeded");
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["amount_refunded"], 400);
}

async fn invalid_requests_get_stable_codes_and_their_parameter(h: Harness) {
    let cases = [
        (
            json!({"amount": -5, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "o", "description": "d"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": 5, "currency": "cny", "method": "alipay_qr", "merchant_reference": "o", "description": "d"}),
            "parameter_invalid",
            "currency",
        ),
        (
            json!({"amount": 5, "currency": "USD", "method": "alipay_qr", "merchant_reference": "o", "description": "d"}),
            "currency_unsupported",
            "currency",
        ),
        (
            json!({"amount": 5, "currency": "CNY", "method": "paypal", "merchant_reference": "o", "description": "d"}),
            "parameter_invalid",
            "method",
        ),
        (
            json!({"amount": 5, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "o"}),
            "parameter_missing",
            "description",
        ),
        (
            json!({"amount": 5, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "o", "description": "d", "colour": 1}),
            "parameter_unknown",
            "colour",
        ),
        (
            json!({"amount": 5.5, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "o", "description": "d"}),
            "parameter_invalid",
            "amount",
        ),
        (
            json!({"amount": 5, "currency": "CNY", "method": "alipay_web", "merchant_reference": "o", "description": "d"}),
            "parameter_missing",
            "return_url",
        ),
    ];
    for (index, (body, code, param)) in cases.into_iter().enumerate() {
        let (status, error) = h
            .post(
                &h.shop_a,
                "/v1/payments",
                &body.to_string(),
                &format!("bad-{index}"),
            )
            .await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert_eq!(error["error"]["param"], param, "{body}: {error}");
    }
    let (status, error) = h
        .post(&h.shop_a, "/v1/payments", "{not json", "bad-json")
        .await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "body_invalid_json");
    let (_, list) = h.get(&h.shop_a, "/v1/payments").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing invalid reached the ledger"
    );
}

async fn list_payments_pages_with_a_cursor(h: Harness) {
    let mut ids = Vec::new();
    for index in 0..5 {
        let (_, payment) = h
            .create(&h.shop_a, 100 + index, &format!("page-{index}"))
            .await;
        ids.push(payment["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let (status, page) = h.get(&h.shop_a, "/v1/payments?limit=2").await;
    assert_eq!(status, 200);
    assert_eq!(page["has_more"], true);
    let mut seen: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    let mut cursor = page["next_cursor"].as_str().unwrap().to_owned();
    loop {
        let (_, page) = h
            .get(
                &h.shop_a,
                &format!("/v1/payments?limit=2&starting_after={cursor}"),
            )
            .await;
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => {
                assert_eq!(page["has_more"], false);
                break;
            }
        }
    }
    assert_eq!(seen, ids);
    let (status, error) = h.get(&h.shop_a, "/v1/payments?limit=0").await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (400, Some("limit"))
    );
    let (status, _) = h.get(&h.shop_a, "/v1/payments?limit=2&bogus=1").await;
    assert_eq!(status, 400);
}

async fn a_late_payment_after_cancel_is_still_recorded(h: Harness) {
    let (_, payment) = h.create(&h.shop_a, 100, "late-1").await;
    let id = payment["id"].as_str().unwrap();
    let (_, canceled) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/cancel"),
            "",
            "late-c",
        )
        .await;
    assert_eq!(canceled["status"], "canceled");
    // The QR was never scanned, so Alipay had nothing to close: the shopper can still pay it.
    assert_eq!(
        h.sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await
            .status,
        200
    );
    let payment = h.wait_for(&h.shop_a, id, "succeeded").await;
    assert_eq!(
        payment["status"], "succeeded",
        "money that moved is never lost"
    );
}

/// The event once its log holds `n` attempts: the receiver sees a request before the gateway
/// has recorded the attempt that the receiver's answer ends.
async fn event_with_attempts(h: &Harness, event_id: &str, n: usize) -> Value {
    let mut event = Value::Null;
    for _ in 0..100 {
        let (status, body) = h.get(&h.shop_a, &format!("/v1/events/{event_id}")).await;
        assert_eq!(status, 200, "{body}");
        event = body;
        if event["delivery"]["log"].as_array().map(Vec::len) == Some(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    event
}

async fn events_show_their_delivery_log_and_can_be_resent(h: Harness) {
    let id = h.paid_payment(500, "ev1").await;
    // Wait for the payment.succeeded delivery.
    let mut event_id = None;
    for _ in 0..100 {
        event_id = h
            .webhooks
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.body.contains("payment.succeeded") && d.body.contains(&id))
            .map(|d| d.event_id.clone());
        if event_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event_id = event_id.expect("payment.succeeded delivered");
    let event = event_with_attempts(&h, &event_id, 1).await;
    assert_eq!(event["type"], "payment.succeeded");
    assert_eq!(event["delivery"]["status"], "delivered");
    assert_eq!(event["delivery"]["log"][0]["delivered"], true);
    // Resent: delivered again under the same id, and the log shows both.
    let (status, resent) = h
        .post(
            &h.shop_a,
            &format!("/v1/events/{event_id}/resend"),
            "",
            "ev1-resend",
        )
        .await;
    assert_eq!(status, 200, "{resent}");
    let mut deliveries = 0;
    for _ in 0..100 {
        deliveries = h
            .webhooks
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.event_id == event_id)
            .count();
        if deliveries == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(deliveries, 2);
    let event = event_with_attempts(&h, &event_id, 2).await;
    assert_eq!(
        event["delivery"]["log"].as_array().unwrap().len(),
        2,
        "{event}"
    );
    assert_eq!(event["delivery"]["status"], "delivered", "{event}");
    // Another merchant cannot see or resend it.
    let (status, _) = h.get(&h.shop_b, &format!("/v1/events/{event_id}")).await;
    assert_eq!(status, 404);
    let (status, _) = h
        .post(
            &h.shop_b,
            &format!("/v1/events/{event_id}/resend"),
            "",
            "ev1-b",
        )
        .await;
    assert_eq!(status, 404);
}

/// Shop E's Alipay app is in certificate mode: the sandbox refuses any request without the
/// SNs it knows, signs with its certificate's key and names it; after Alipay moves to its next
/// certificate, answers name that one, and the shop, holding both, keeps working. Its app names
/// the buyer by `buyer_open_id` (Alipay's OpenID migration), which Moongate takes as well.
async fn alipay_certificate_mode_pays_refunds_and_survives_a_rotation(h: Harness) {
    let (status, payment) = h.create(&h.shop_e, 2_000, "cert-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action");
    let id = payment["id"].as_str().unwrap();
    assert_eq!(
        h.sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await
            .status,
        200
    );
    h.wait_for(&h.shop_e, id, "succeeded").await;
    let sent = h.sandbox_notifications(id).await;
    assert_eq!(sent[0]["acknowledged"], true);
    let body = sent[0]["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("alipay_cert_sn={}", alipay_sn("alipay"))),
        "{body}"
    );
    assert!(
        body.contains("buyer_open_id=") && !body.contains("buyer_id="),
        "{body}"
    );

    let rotated = h.sandbox("/sandbox/rotate-certificate", json!({})).await;
    assert_eq!(rotated.status, 200);
    let (status, refund) = h
        .post(
            &h.shop_e,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":500}"#,
            "cert-r-1",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    // The refund's notification came from the next certificate.
    let sent = h.sandbox_notifications(id).await;
    let last = sent.last().unwrap()["body"].as_str().unwrap();
    assert!(
        last.contains(&format!("alipay_cert_sn={}", alipay_sn("alipay-next"))),
        "{last}"
    );
    let (status, payment) = h.get(&h.shop_e, &format!("/v1/payments/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(payment["amount_refunded"], 500);
}

/// Shop F is served through the ISV partner: its calls are the ISV app's, signed with the ISV's
/// key and carrying the merchant's `app_auth_token` (the sandbox refuses any other token); its
/// notifications name the ISV app as `app_id` and the merchant as `auth_app_id`.
async fn an_isv_served_merchant_pays_and_refunds_under_its_authorisation(h: Harness) {
    let (status, payment) = h.create(&h.shop_f, 3_000, "isv-1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action");
    let id = payment["id"].as_str().unwrap();
    assert_eq!(
        h.sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await
            .status,
        200
    );
    h.wait_for(&h.shop_f, id, "succeeded").await;
    let sent = h.sandbox_notifications(id).await;
    assert_eq!(sent[0]["acknowledged"], true);
    let body = sent[0]["body"].as_str().unwrap();
    assert!(body.contains(&format!("&app_id={APP_ID}&")), "{body}");
    assert!(
        body.contains(&format!("auth_app_id={ISV_MERCHANT_APP_ID}")),
        "{body}"
    );
    assert!(!body.contains(ISV_APP_AUTH_TOKEN), "{body}");
    let (status, refund) = h
        .post(
            &h.shop_f,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":1000}"#,
            "isv-r-1",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded");
    // The same app's direct merchant (shop A) knows nothing of shop F's trade.
    let (status, _) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(status, 404);
}
