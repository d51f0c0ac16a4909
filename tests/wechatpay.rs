//! End-to-end WeChat Pay on loopback: Moongate against the strict WeChat Pay sandbox, plus
//! payment codes of both wallets through the one `payment_code` method.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Harness, MERCHANT_SERIAL, PUB_KEY_ID, WX_APPID, fixtures};
use moongate_adapter_wechatpay::{aead, sign};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};
use serde_json::{Value, json};

on_both_ledgers!(
    native_payment_is_paid_by_notification,
    certificate_mode_merchant_is_served_too,
    jsapi_returns_parameters_signed_for_the_wallet,
    h5_redirects_and_returns_to_the_shop,
    close_and_refunds_follow_the_provider,
    payment_codes_of_both_wallets_through_one_method,
    forged_stale_probe_and_wrong_key_notifications_change_nothing,
    sandbox_probe_is_refused_after_a_real_notification,
    one_storefront_gets_identical_events_from_both_wallets,
    provider_faults_leave_the_outcome_open_never_paid,
    routing_rules_choose_the_account_and_are_recorded,
    a_provider_clock_off_by_ten_minutes_is_not_trusted,
    notifications_out_of_order_and_twice_settle_the_same_way,
);

fn native(key: &str, amount: i64) -> Value {
    json!({
        "amount": amount, "currency": "CNY", "method": "wechat_native",
        "merchant_reference": format!("order-{key}"), "description": "Oolong tea 250g",
    })
}

async fn created(
    h: &Harness,
    client: &moongate_testkit::client::MerchantClient,
    body: Value,
    key: &str,
) -> Value {
    let (status, payment) = h.create_with(client, body, key).await;
    assert_eq!(status, 201, "{payment}");
    payment
}

async fn pay_wechat(h: &Harness, id: &str) {
    let paid = h.wechat("/sandbox/pay", json!({"out_trade_no": id})).await;
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
}

async fn native_payment_is_paid_by_notification(h: Harness) {
    let payment = created(&h, &h.shop_a, native("n1", 1999), "n1").await;
    assert_eq!(payment["status"], "requires_action");
    assert_eq!(payment["provider"]["kind"], "wechatpay");
    assert_eq!(payment["provider"]["account"], "wechat_main");
    assert_eq!(payment["provider"]["route"], "default");
    assert_eq!(payment["next_action"]["type"], "display_qr");
    assert!(
        payment["next_action"]["qr_data"]
            .as_str()
            .unwrap()
            .starts_with("weixin://wxpay/bizpayurl?pr="),
        "{payment}"
    );
    let id = payment["id"].as_str().unwrap();
    pay_wechat(&h, id).await;
    let paid = h.wait_for(&h.shop_a, id, "succeeded").await;
    let transaction = paid["provider"]["transaction_id"].as_str().unwrap();
    assert!(
        transaction.starts_with("4200") && transaction.len() == 28,
        "{transaction}"
    );
    // The sandbox records the answer just after Moongate has committed it.
    let mut sent = h.wechat_notifications(id).await;
    for _ in 0..50 {
        if sent[0]["acknowledged"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        sent = h.wechat_notifications(id).await;
    }
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(sent[0]["acknowledged"], true);
    assert_eq!(sent[0]["last_status"], 204);
    // A duplicate delivery (same envelope id) is acknowledged and changes nothing.
    let again = h
        .wechat("/sandbox/resend", json!({"out_trade_no": id}))
        .await;
    let again: Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(again["status"], 204);
    let kinds = h.event_kinds(id).await;
    assert_eq!(
        kinds,
        vec![
            "payment.created",
            "payment.requires_action",
            "payment.succeeded"
        ]
    );
}

async fn certificate_mode_merchant_is_served_too(h: Harness) {
    let payment = created(&h, &h.shop_b, native("c1", 500), "c1").await;
    assert_eq!(payment["status"], "requires_action", "{payment}");
    let id = payment["id"].as_str().unwrap();
    pay_wechat(&h, id).await;
    h.wait_for(&h.shop_b, id, "succeeded").await;
}

async fn jsapi_returns_parameters_signed_for_the_wallet(h: Harness) {
    let mut body = native("j1", 880);
    body["method"] = json!("wechat_jsapi");
    let (status, error) = h.create_with(&h.shop_a, body.clone(), "j0").await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["code"], "parameter_missing");
    assert_eq!(error["error"]["param"], "payer.openid");
    body["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
    let payment = created(&h, &h.shop_a, body, "j1").await;
    let action = &payment["next_action"];
    assert_eq!(action["type"], "wechat_jsapi", "{payment}");
    let p = &action["parameters"];
    assert_eq!(p["appId"], WX_APPID);
    assert_eq!(p["signType"], "RSA");
    assert!(p["package"].as_str().unwrap().starts_with("prepay_id=wx"));
    let message = sign::jsapi_message(
        p["appId"].as_str().unwrap(),
        p["timeStamp"].as_str().unwrap(),
        p["nonceStr"].as_str().unwrap(),
        p["package"].as_str().unwrap(),
    );
    let merchant_public = RsaVerifier::from_pem(
        &std::fs::read_to_string(fixtures().join("keys/wechatpay-go-merchant-public-key.pem"))
            .unwrap(),
    )
    .unwrap();
    assert!(merchant_public.verify_base64(message.as_bytes(), p["paySign"].as_str().unwrap()));
    assert_eq!(payment["payer"]["openid"], "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o");
    let id = payment["id"].as_str().unwrap();
    pay_wechat(&h, id).await;
    h.wait_for(&h.shop_a, id, "succeeded").await;
}

async fn h5_redirects_and_returns_to_the_shop(h: Harness) {
    let mut body = native("h1", 1200);
    body["method"] = json!("wechat_h5");
    body["return_url"] = json!("https://shop.example/done?order=h1");
    let (status, error) = h.create_with(&h.shop_a, body.clone(), "h0").await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (400, Some("payer.client_ip"))
    );
    body["payer"] = json!({"client_ip": "203.0.113.7"});
    let payment = created(&h, &h.shop_a, body, "h1").await;
    let url = payment["next_action"]["url"].as_str().unwrap();
    assert_eq!(payment["next_action"]["type"], "redirect");
    assert!(url.contains("/sandbox/h5?prepay_id=wx"), "{url}");
    assert!(
        url.ends_with("&redirect_url=https%3A%2F%2Fshop.example%2Fdone%3Forder%3Dh1"),
        "{url}"
    );
}

async fn close_and_refunds_follow_the_provider(h: Harness) {
    // Close an unpaid order: 204 at the provider, canceled here, closed there.
    let payment = created(&h, &h.shop_a, native("x1", 300), "x1").await;
    let id = payment["id"].as_str().unwrap();
    let (status, canceled) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/cancel"),
            "",
            "x1-cancel",
        )
        .await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (200, Some("canceled")),
        "{canceled}"
    );
    let late = h.wechat("/sandbox/pay", json!({"out_trade_no": id})).await;
    assert_eq!(late.status, 409, "a closed order cannot be paid");

    // Pay, refund part: PROCESSING, then the REFUND.SUCCESS notification settles it.
    let payment = created(&h, &h.shop_a, native("r1", 1000), "r1").await;
    let id = payment["id"].as_str().unwrap();
    pay_wechat(&h, id).await;
    h.wait_for(&h.shop_a, id, "succeeded").await;
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":400}"#,
            "r1-refund",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "pending");
    let refund_id = refund["id"].as_str().unwrap();
    h.wait_for_refund(&h.shop_a, refund_id, "succeeded").await;
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["amount_refunded"], 400);
    let sent = h.wechat_notifications(id).await;
    assert!(
        sent.iter()
            .any(|n| n["event_type"] == "REFUND.SUCCESS" && n["acknowledged"] == true),
        "{sent:?}"
    );
    // More than what is left is refused before reaching the provider.
    let (status, error) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":700}"#,
            "r1-refund-2",
        )
        .await;
    assert_eq!(status, 400, "{error}");
    // "All that is left" counts a refund still pending: 100 pending of the 600 left, then the
    // rest is 500 (it was 600, refused as exceeding the payment).
    let (status, pending) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":100}"#,
            "r1-refund-3",
        )
        .await;
    assert_eq!(
        (status, pending["status"].as_str()),
        (201, Some("pending")),
        "{pending}"
    );
    let (status, rest) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            "",
            "r1-refund-rest",
        )
        .await;
    assert_eq!(status, 201, "{rest}");
    assert_eq!(rest["amount"], 500);
}

async fn payment_code(h: &Harness, code: &str, key: &str) -> (u16, Value) {
    let body = json!({
        "amount": 2500, "currency": "CNY", "method": "payment_code",
        "merchant_reference": format!("till-{key}"), "description": "Counter sale",
        "payer": {"payment_code": code, "client_ip": "198.51.100.4"},
    });
    h.create_with(&h.shop_a, body, key).await
}

async fn payment_codes_of_both_wallets_through_one_method(h: Harness) {
    // WeChat Pay code (18 digits, 10-15): micropay, paid at once.
    let (status, wx) = payment_code(&h, "134567890123456789", "pc1").await;
    assert_eq!(status, 201, "{wx}");
    assert_eq!(wx["method"], "wechat_payment_code");
    assert_eq!(wx["status"], "succeeded", "{wx}");
    assert_eq!(wx["provider"]["account"], "wechat_main");
    assert!(
        wx["payer"].get("payment_code").is_none(),
        "the code is never echoed"
    );
    // Alipay code (25-30): alipay.trade.pay, paid at once.
    let (status, ali) = payment_code(&h, "284567890123456789", "pc2").await;
    assert_eq!(status, 201, "{ali}");
    assert_eq!(ali["method"], "alipay_payment_code");
    assert_eq!(ali["status"], "succeeded", "{ali}");
    assert_eq!(ali["provider"]["account"], "alipay_main");
    // Codes that need the shopper's password stay pending until a query sees them paid.
    let (_, wx_wait) = payment_code(&h, "134567890123450000", "pc3").await;
    let (_, ali_wait) = payment_code(&h, "284567890123450000", "pc4").await;
    for waiting in [&wx_wait, &ali_wait] {
        assert_eq!(waiting["status"], "pending", "{waiting}");
        assert_eq!(waiting["next_action"]["type"], "await_shopper_confirmation");
    }
    let wx_id = wx_wait["id"].as_str().unwrap();
    let ali_id = ali_wait["id"].as_str().unwrap();
    // The ledger keeps a scanned code only while the payment is open (issue 25, finding 8).
    let stored_code = |id: String| {
        let store = std::sync::Arc::clone(&h.gateway.gateway.store);
        async move {
            let payment = store.payment(None, &id).await.unwrap().unwrap();
            payment.payer.payment_code
        }
    };
    assert_eq!(
        stored_code(wx_id.to_owned()).await.as_deref(),
        Some("134567890123450000")
    );
    assert_eq!(
        stored_code(wx["id"].as_str().unwrap().to_owned()).await,
        None
    );
    pay_wechat(&h, wx_id).await;
    let paid = h
        .sandbox("/sandbox/pay", json!({"out_trade_no": ali_id}))
        .await;
    assert_eq!(paid.status, 200);
    // No re-check pass here (the harness's is an hour away): the quick payment-code
    // follow-up queries them.
    h.wait_for(&h.shop_a, wx_id, "succeeded").await;
    h.wait_for(&h.shop_a, ali_id, "succeeded").await;
    for id in [wx_id, ali_id, ali["id"].as_str().unwrap()] {
        assert_eq!(stored_code(id.to_owned()).await, None, "{id}");
    }
    // Declined codes fail for good; unknown wallets are refused up front.
    let (_, broke) = payment_code(&h, "134567890123459999", "pc5").await;
    assert_eq!(
        (broke["status"].as_str(), broke["failure"]["code"].as_str()),
        (Some("failed"), Some("NOTENOUGH"))
    );
    assert_eq!(
        stored_code(broke["id"].as_str().unwrap().to_owned()).await,
        None
    );
    let (_, broke) = payment_code(&h, "284567890123459999", "pc6").await;
    assert_eq!(broke["failure"]["code"], "ACQ.BUYER_BALANCE_NOT_ENOUGH");
    // UnionPay's 62… codes go to UnionPay; a code no wallet declares is refused.
    let (status, unionpay) = payment_code(&h, "6212345678901234567", "pc7").await;
    assert_eq!(status, 201, "{unionpay}");
    assert_eq!(unionpay["method"], "unionpay_payment_code");
    h.wait_for(&h.shop_a, unionpay["id"].as_str().unwrap(), "succeeded")
        .await;
    let (status, unknown) = payment_code(&h, "9912345678901234567", "pc7b").await;
    assert_eq!(status, 400);
    assert_eq!(unknown["error"]["code"], "payment_code_unsupported");
    // A WeChat code sent as an Alipay method is refused.
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "alipay_payment_code",
        "merchant_reference": "till-x", "description": "x",
        "payer": {"payment_code": "134567890123456789"},
    });
    let (status, error) = h.create_with(&h.shop_a, body, "pc8").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("payment_code_invalid"))
    );
    // A code sent with a method that does not take one is refused, not stored.
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "wechat_native",
        "merchant_reference": "till-y", "description": "x",
        "payer": {"payment_code": "134567890123456789"},
    });
    let (status, error) = h.create_with(&h.shop_a, body, "pc9").await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (400, Some("payer.payment_code"))
    );
    // Payment-code payments refund like any other.
    let wx_paid = wx["id"].as_str().unwrap();
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{wx_paid}/refunds"),
            "",
            "pc1-refund",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    h.wait_for_refund(&h.shop_a, refund["id"].as_str().unwrap(), "succeeded")
        .await;
}

/// A notification signed by `signer` under `serial`, encrypting `plain` with `apiv3_key`.
fn notification(
    plain: &Value,
    apiv3_key: &str,
    signer: &RsaSigner,
    serial: &str,
    timestamp: i64,
    probe: bool,
) -> (Vec<(String, String)>, Vec<u8>) {
    let ciphertext = aead::encrypt(
        apiv3_key.as_bytes(),
        "Kj7QIyUiYx1q",
        "transaction",
        plain.to_string().as_bytes(),
    )
    .unwrap();
    let body = json!({
        "id": "EV-forged-0001", "create_time": "2026-11-22T10:00:00+08:00",
        "resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": ciphertext, "associated_data": "transaction", "nonce": "Kj7QIyUiYx1q"},
    })
    .to_string();
    let nonce = "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz";
    let mut signature = signer
        .sign_base64(&sign::response_message(
            &timestamp.to_string(),
            nonce,
            body.as_bytes(),
        ))
        .unwrap();
    if probe {
        signature = format!("WECHATPAY/SIGNTEST/{signature}");
    }
    (
        vec![
            ("content-type".into(), "application/json".into()),
            ("wechatpay-timestamp".into(), timestamp.to_string()),
            ("wechatpay-nonce".into(), nonce.into()),
            ("wechatpay-serial".into(), serial.into()),
            ("wechatpay-signature".into(), signature),
            (
                "wechatpay-signature-type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ],
        body.into_bytes(),
    )
}

async fn post_wechat_notification(
    h: &Harness,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> HttpResponse {
    let request = HttpRequest {
        method: HttpMethod::Post,
        url: format!(
            "http://{}/notify/wechatpay/shop_a/wechat_main",
            h.gateway.addr
        ),
        headers,
        body,
    };
    h.http.send(&request).await.unwrap()
}

async fn forged_stale_probe_and_wrong_key_notifications_change_nothing(h: Harness) {
    let payment = created(&h, &h.shop_a, native("f1", 700), "f1").await;
    let id = payment["id"].as_str().unwrap().to_owned();
    let plain = json!({
        "mchid": common::MCHID_A, "appid": WX_APPID, "out_trade_no": id,
        "transaction_id": "4200000000000000000000000009", "trade_type": "NATIVE",
        "trade_state": "SUCCESS", "trade_state_desc": "支付成功", "bank_type": "OTHERS",
        "success_time": "2026-11-22T10:00:00+08:00", "payer": {"openid": "o1"},
        "amount": {"total": 700, "payer_total": 700, "currency": "CNY", "payer_currency": "CNY"},
    });
    let keys = fixtures().join("keys");
    let platform = RsaSigner::from_pem(
        &std::fs::read_to_string(keys.join("sandbox-wechatpay-private-key.pem")).unwrap(),
    )
    .unwrap();
    let attacker = RsaSigner::from_pem(
        &std::fs::read_to_string(keys.join("sandbox-alipay-private-key.pem")).unwrap(),
    )
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cases = [
        (
            "forged signature",
            notification(
                &plain,
                common::APIV3_KEY_A,
                &attacker,
                PUB_KEY_ID,
                now,
                false,
            ),
        ),
        (
            "stale timestamp",
            notification(
                &plain,
                common::APIV3_KEY_A,
                &platform,
                PUB_KEY_ID,
                now - 600,
                false,
            ),
        ),
        (
            "SIGNTEST probe",
            notification(
                &plain,
                common::APIV3_KEY_A,
                &platform,
                PUB_KEY_ID,
                now,
                true,
            ),
        ),
        (
            "unknown serial",
            notification(
                &plain,
                common::APIV3_KEY_A,
                &platform,
                MERCHANT_SERIAL,
                now,
                false,
            ),
        ),
        (
            "wrong APIv3 key",
            notification(
                &plain,
                common::APIV3_KEY_B,
                &platform,
                PUB_KEY_ID,
                now,
                false,
            ),
        ),
    ];
    for (what, (headers, body)) in cases {
        let response = post_wechat_notification(&h, headers, body).await;
        assert_eq!(response.status, 500, "{what} must be refused");
        assert_eq!(
            String::from_utf8_lossy(&response.body),
            r#"{"code":"FAIL","message":"失败"}"#,
            "{what}"
        );
    }
    let (_, unchanged) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(unchanged["status"], "requires_action");
    assert_eq!(
        h.event_kinds(&id).await,
        vec!["payment.created", "payment.requires_action"]
    );
    // The genuine article, signed by the platform key, is accepted.
    let (headers, body) = notification(
        &plain,
        common::APIV3_KEY_A,
        &platform,
        PUB_KEY_ID,
        now,
        false,
    );
    let response = post_wechat_notification(&h, headers, body).await;
    assert_eq!(response.status, 204);
    h.wait_for(&h.shop_a, &id, "succeeded").await;
    // WeChat's own probes of a real notification are answered with a 5XX.
    let probe = h
        .wechat("/sandbox/probe", json!({"out_trade_no": id}))
        .await;
    assert_eq!(
        probe.status, 404,
        "no sandbox notification exists for a forged-path payment"
    );
}

async fn sandbox_probe_is_refused_after_a_real_notification(h: Harness) {
    let payment = created(&h, &h.shop_a, native("p1", 100), "p1").await;
    let id = payment["id"].as_str().unwrap();
    pay_wechat(&h, id).await;
    h.wait_for(&h.shop_a, id, "succeeded").await;
    let probe = h
        .wechat("/sandbox/probe", json!({"out_trade_no": id}))
        .await;
    let probe: Value = serde_json::from_slice(&probe.body).unwrap();
    assert_eq!(probe["status"], 500);
    assert_eq!(
        h.event_kinds(id).await,
        vec![
            "payment.created",
            "payment.requires_action",
            "payment.succeeded"
        ]
    );
}

fn keys_of(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

async fn one_storefront_gets_identical_events_from_both_wallets(h: Harness) {
    let alipay_id = h.paid_payment(1500, "both-ali").await;
    let payment = created(&h, &h.shop_a, native("both-wx", 1500), "both-wx").await;
    let wechat_id = payment["id"].as_str().unwrap().to_owned();
    pay_wechat(&h, &wechat_id).await;
    h.wait_for(&h.shop_a, &wechat_id, "succeeded").await;
    let mut events = Vec::new();
    for _ in 0..100 {
        events = h
            .webhooks
            .lock()
            .unwrap()
            .iter()
            .map(|d| serde_json::from_str::<Value>(&d.body).unwrap())
            .filter(|e| e["type"] == "payment.succeeded")
            .collect();
        if events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 2, "{events:?}");
    let ali = events
        .iter()
        .find(|e| e["data"]["object"]["id"] == alipay_id.as_str())
        .unwrap();
    let wx = events
        .iter()
        .find(|e| e["data"]["object"]["id"] == wechat_id.as_str())
        .unwrap();
    assert_eq!(keys_of(ali), keys_of(wx));
    assert_eq!(
        keys_of(&ali["data"]["object"]),
        keys_of(&wx["data"]["object"])
    );
    assert_eq!(
        keys_of(&ali["data"]["object"]["provider"]),
        keys_of(&wx["data"]["object"]["provider"])
    );
    assert_eq!(
        ali["data"]["object"]["amount"],
        wx["data"]["object"]["amount"]
    );
    assert_eq!(ali["data"]["object"]["provider"]["kind"], "alipay");
    assert_eq!(wx["data"]["object"]["provider"]["kind"], "wechatpay");
}

async fn provider_faults_leave_the_outcome_open_never_paid(h: Harness) {
    for mode in ["garbage", "http_500", "bad_signature"] {
        let fault = h
            .wechat("/sandbox/fault", json!({"mode": mode, "count": 1}))
            .await;
        assert_eq!(fault.status, 204);
        let key = format!("fault-{mode}");
        let payment = created(&h, &h.shop_a, native(&key, 100), &key).await;
        assert_eq!(payment["status"], "unknown", "{mode}: {payment}");
        // The re-check asks again (same out_trade_no) and learns the truth.
        h.gateway
            .gateway
            .recheck_once(Duration::ZERO)
            .await
            .unwrap();
        let id = payment["id"].as_str().unwrap();
        h.wait_for(&h.shop_a, id, "requires_action").await;
    }
}

async fn routing_rules_choose_the_account_and_are_recorded(h: Harness) {
    // A tagged WeChat payment is taken by the first rule.
    let mut body = native("route1", 800);
    body["metadata"] = json!({"campaign": "double11"});
    body["channel"] = json!("mobile_web");
    let tagged = created(&h, &h.shop_a, body, "route1").await;
    assert_eq!(tagged["provider"]["route"], "tagged-wechat");
    assert_eq!(tagged["provider"]["account"], "wechat_main");
    assert_eq!(tagged["channel"], "mobile_web");
    // The same tag on an Alipay payment: the first rule cannot serve it, the default list can.
    let body = json!({
        "amount": 800, "currency": "CNY", "method": "alipay_qr", "merchant_reference": "route2",
        "description": "Tea", "metadata": {"campaign": "double11"},
    });
    let alipay = created(&h, &h.shop_a, body, "route2").await;
    assert_eq!(alipay["provider"]["route"], "default");
    assert_eq!(alipay["provider"]["account"], "alipay_main");
    // Naming the account bypasses the rules, and that is recorded too.
    let mut body = native("route3", 800);
    body["account"] = json!("wechat_main");
    let explicit = created(&h, &h.shop_a, body, "route3").await;
    assert_eq!(explicit["provider"]["route"], Value::Null);
    let mut body = native("route4", 800);
    body["channel"] = json!("kiosk");
    let (status, error) = h.create_with(&h.shop_a, body, "route4").await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (400, Some("channel"))
    );
}

async fn a_provider_clock_off_by_ten_minutes_is_not_trusted(h: Harness) {
    let skew = h.wechat("/sandbox/clock", json!({"skew_secs": -600})).await;
    assert_eq!(skew.status, 204);
    // The answer's signature is stale: the outcome is unknown, never trusted.
    let payment = created(&h, &h.shop_a, native("k1", 300), "k1").await;
    assert_eq!(payment["status"], "unknown", "{payment}");
    let id = payment["id"].as_str().unwrap().to_owned();
    // Its clock fixed, the re-check learns the truth.
    let fixed = h.wechat("/sandbox/clock", json!({"skew_secs": 0})).await;
    assert_eq!(fixed.status, 204);
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
    h.wait_for(&h.shop_a, &id, "requires_action").await;
    // A notification signed with a skewed clock is refused (and retried by WeChat Pay).
    h.wechat("/sandbox/clock", json!({"skew_secs": 600})).await;
    pay_wechat(&h, &id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, still) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(still["status"], "requires_action", "{still}");
    let sent = h.wechat_notifications(&id).await;
    assert_eq!(sent[0]["acknowledged"], false);
    assert_eq!(sent[0]["last_status"], 500);
    // Back in sync, the next retry is accepted.
    h.wechat("/sandbox/clock", json!({"skew_secs": 0})).await;
    h.wait_for(&h.shop_a, &id, "succeeded").await;
}

async fn notifications_out_of_order_and_twice_settle_the_same_way(h: Harness) {
    let payment = created(&h, &h.shop_a, native("o1", 1000), "o1").await;
    let id = payment["id"].as_str().unwrap().to_owned();
    // The payment notification is held back; a re-check learns of the payment meanwhile.
    assert_eq!(h.wechat("/sandbox/hold", json!({})).await.status, 204);
    pay_wechat(&h, &id).await;
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
    h.wait_for(&h.shop_a, &id, "succeeded").await;
    // A refund settles; its notification is held too.
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":400}"#,
            "o1-r",
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    let refund_id = refund["id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        let held: Vec<Value> = h.wechat_notifications(&id).await;
        if held.iter().any(|n| n["event_type"] == "REFUND.SUCCESS") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Delivered newest first: the refund's, then the payment's; then the payment's again.
    let released = h.wechat("/sandbox/release", json!({"reverse": true})).await;
    let released: Value = serde_json::from_slice(&released.body).unwrap();
    assert_eq!(released["released"], 2);
    let again = h
        .wechat("/sandbox/resend", json!({"out_trade_no": id}))
        .await;
    assert_eq!(again.status, 200);
    h.wait_for_refund(&h.shop_a, &refund_id, "succeeded").await;
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["amount_refunded"], 400);
    let sent = h.wechat_notifications(&id).await;
    assert!(sent.iter().all(|n| n["acknowledged"] == true), "{sent:?}");
    assert_eq!(
        h.event_kinds(&id).await,
        vec![
            "payment.created",
            "payment.requires_action",
            "payment.succeeded",
            "payment.refunded"
        ]
    );
}
