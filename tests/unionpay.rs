//! End-to-end UnionPay on loopback: Moongate against the strict UnionPay sandbox. What the
//! conformance kit does not pin: a full refund on the payment's clearing day is an undo
//! (`31`), any other a refund (`04`); a refund's notification finds its payment through the
//! `reqReserved` echo; the webhooks a merchant gets are the same as for the other wallets; and
//! the clearing day's bill matches all of it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::Harness;
use moongate::reconcile::Category;
use moongate::reconcile::run::{ReconcileError, RunRequest, Source, reconcile};
use moongate_contract::statement::format_day;
use serde_json::{Value, json};

on_both_ledgers!(
    a_qr_payment_is_paid_refunded_and_undone,
    a_web_payment_is_a_signed_form_the_browser_posts,
    a_forged_answer_certificate_is_never_believed,
    an_unpaid_code_past_its_deadline_is_canceled_once_a_query_says_so,
);

async fn qr_payment(h: &Harness, amount: i64, key: &str) -> String {
    let body = json!({
        "amount": amount, "currency": "CNY", "method": "unionpay_qr",
        "merchant_reference": key, "description": "云闪付 tea",
    });
    let (status, payment) = h.create_with(&h.shop_a, body, key).await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action", "{payment}");
    let qr = payment["next_action"]["qr_data"].as_str().unwrap();
    assert!(qr.starts_with("https://qr.95516.com/"), "{qr}");
    payment["id"].as_str().unwrap().to_owned()
}

/// The notifications the sandbox sent about one UnionPay order (a payment's or a refund's).
async fn notices(h: &Harness, order: &str) -> Vec<Value> {
    for _ in 0..100 {
        let sent = h.sent(h.unionpay_addr, order).await;
        if !sent.is_empty() && sent.iter().all(|n| n["attempts"].as_u64() >= Some(1)) {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no notification for {order}");
}

async fn refund_until(h: &Harness, id: &str, amount: i64, key: &str) -> String {
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            &json!({ "amount": amount }).to_string(),
            key,
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    let refund_id = refund["id"].as_str().unwrap().to_owned();
    for _ in 0..200 {
        let (_, current) = h.get(&h.shop_a, &format!("/v1/refunds/{refund_id}")).await;
        if current["status"] == "succeeded" {
            return refund_id;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("refund {refund_id} never succeeded");
}

async fn a_qr_payment_is_paid_refunded_and_undone(h: Harness) {
    // Paid by the shopper: the verified notification makes it succeeded.
    let id = qr_payment(&h, 1000, "u1").await;
    let paid = h
        .control(h.unionpay_addr, "/sandbox/pay", json!({"out_trade_no": id}))
        .await;
    assert_eq!(paid.status, 200);
    let payment = h.wait_for(&h.shop_a, &id, "succeeded").await;
    let query_id = payment["provider"]["transaction_id"].as_str().unwrap();
    assert_eq!(query_id.len(), 21, "{payment}");
    assert_eq!(notices(&h, &id).await[0]["acknowledged"], true);

    // Part of it: a refund (04), naming the consume by its queryId.
    let partial = refund_until(&h, &id, 300, "u1-r1").await;
    let sent = notices(&h, &partial).await;
    let body = sent[0]["body"].as_str().unwrap();
    assert!(body.contains("txnType=04"), "{body}");
    assert!(body.contains(&format!("origQryId={query_id}")), "{body}");
    assert_eq!(sent[0]["acknowledged"], true, "{sent:?}");
    let (_, after) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(after["amount_refunded"], 300, "{after}");

    // All of a payment on its clearing day: an undo (31).
    let other = qr_payment(&h, 800, "u2").await;
    h.control(
        h.unionpay_addr,
        "/sandbox/pay",
        json!({"out_trade_no": other}),
    )
    .await;
    h.wait_for(&h.shop_a, &other, "succeeded").await;
    let undo = refund_until(&h, &other, 800, "u2-r1").await;
    let sent = notices(&h, &undo).await;
    assert!(
        sent[0]["body"].as_str().unwrap().contains("txnType=31"),
        "{sent:?}"
    );
    let kinds = h.event_kinds(&other).await;
    assert!(kinds.contains(&"payment.refunded".to_owned()), "{kinds:?}");
    // The merchant heard of both payments through its webhook, as for any wallet.
    for payment in [&id, &other] {
        let mut found = false;
        for _ in 0..100 {
            found = h.webhooks.lock().unwrap().iter().any(|d| {
                let event: Value = serde_json::from_str(&d.body).unwrap();
                event["type"] == "payment.succeeded"
                    && event["data"]["object"]["id"] == payment.as_str()
                    && event["data"]["object"]["method"] == "unionpay_qr"
            });
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(found, "payment.succeeded webhook for {payment}");
    }

    // The clearing day's bill (file transfer, the ZM file inside): both payments, the refund
    // and the undo match the ledger, refunds by their own order id and their payment's
    // (`reqReserved`).
    let day = moongate::registry::facts(moongate_contract::ProviderKind::UnionPay)
        .wallet
        .statement_day
        .day_of(time::OffsetDateTime::now_utc());
    let run = |day| {
        reconcile(
            &h.gateway.gateway,
            RunRequest {
                merchant_id: "shop_a".to_owned(),
                account_id: "unionpay_main".to_owned(),
                day,
                source: Source::Download,
            },
            None,
        )
    };
    // Not over yet: UnionPay has no file (98), which is "not ready", not an empty day.
    let early = run(day).await.map(|r| r.run_id);
    assert!(
        matches!(early, Err(ReconcileError::NotReady(_))),
        "{early:?}"
    );
    let tomorrow = format_day(day.next_day().unwrap());
    let clock = h
        .control(
            h.unionpay_addr,
            "/sandbox/statement-clock",
            json!({"today": tomorrow}),
        )
        .await;
    assert_eq!(clock.status, 204);
    let report = run(day).await.unwrap();
    assert_eq!(report.count(Category::Matched), 2, "{:?}", report.summary);
    assert_eq!(report.count(Category::Refund), 2, "{:?}", report.summary);
    assert_eq!(report.break_count, 0, "{:#?}", report.breaks);
}

async fn a_forged_answer_certificate_is_never_believed(h: Harness) {
    // An answer signed over other bytes: the create's outcome stays unknown, never a code.
    let fault = h
        .control(
            h.unionpay_addr,
            "/sandbox/fault",
            json!({"mode": "bad_signature", "count": 1}),
        )
        .await;
    assert_eq!(fault.status, 204);
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "unionpay_qr",
        "merchant_reference": "f1", "description": "tea",
    });
    let (status, payment) = h.create_with(&h.shop_a, body, "f1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "unknown", "{payment}");
    assert!(payment["next_action"].is_null(), "{payment}");
    // UnionPay has no close: the API says so and leaves the payment as it is.
    let (status, refused) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{}/cancel", payment["id"].as_str().unwrap()),
            "",
            "f1-cancel",
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "payment_not_cancelable");
}

async fn an_unpaid_code_past_its_deadline_is_canceled_once_a_query_says_so(h: Harness) {
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "unionpay_qr",
        "merchant_reference": "e1", "description": "tea", "expires_in_seconds": 60,
    });
    let (status, payment) = h.create_with(&h.shop_a, body, "e1").await;
    assert_eq!(status, 201, "{payment}");
    let id = payment["id"].as_str().unwrap().to_owned();
    let later = time::OffsetDateTime::now_utc() + time::Duration::minutes(3);
    // The query gets no usable answer: nothing changes (UnionPay has no close to try).
    let fault = h
        .control(
            h.unionpay_addr,
            "/sandbox/fault",
            json!({"mode": "http_500", "count": 1}),
        )
        .await;
    assert_eq!(fault.status, 204);
    h.gateway.gateway.janitor_once(later).await.unwrap();
    let (_, after) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(after["status"], "requires_action", "{after}");
    // Then it says unpaid: past its payTimeout nothing can pay it any more.
    h.gateway
        .gateway
        .janitor_once(later + time::Duration::hours(2))
        .await
        .unwrap();
    let (_, after) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(after["status"], "canceled", "{after}");
    assert_eq!(after["failure"]["code"], "expired", "{after}");
}

/// A form POST as the shopper's browser sends it.
async fn browser_post(h: &Harness, url: &str, fields: &[(String, String)]) -> (u16, String) {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let answer = h
        .http
        .send(&moongate_contract::HttpRequest {
            method: moongate_contract::HttpMethod::Post,
            url: url.to_owned(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: body.into_bytes(),
        })
        .await
        .unwrap();
    (
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    )
}

async fn a_web_payment_is_a_signed_form_the_browser_posts(h: Harness) {
    for (method, channel, key) in [("unionpay_web", "07", "w1"), ("unionpay_wap", "08", "w2")] {
        // Without a return_url there is nowhere to send the shopper back.
        let body = json!({
            "amount": 2600, "currency": "CNY", "method": method, "merchant_reference": key, "description": "银联 tea",
        });
        let (status, refused) = h.create_with(&h.shop_a, body, &format!("{key}-x")).await;
        assert_eq!(status, 400, "{refused}");
        assert_eq!(refused["error"]["param"], "return_url", "{refused}");
        let body = json!({
            "amount": 2600, "currency": "CNY", "method": method, "merchant_reference": key, "description": "银联 tea",
            "return_url": "https://shop.example/paid",
        });
        let (status, payment) = h.create_with(&h.shop_a, body, key).await;
        assert_eq!(status, 201, "{payment}");
        assert_eq!(payment["status"], "requires_action", "{payment}");
        let action = &payment["next_action"];
        assert_eq!(action["type"], "form_post", "{payment}");
        let url = action["url"].as_str().unwrap();
        assert!(url.ends_with("/gateway/api/frontTransReq.do"), "{url}");
        let fields: Vec<(String, String)> = action["fields"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("bizType"), Some("000201"));
        assert_eq!(get("channelType"), Some(channel));
        assert_eq!(get("frontUrl"), Some("https://shop.example/paid"));
        assert_eq!(get("txnAmt"), Some("2600"));
        // Nothing was sent to UnionPay: the browser posts the form.
        let id = payment["id"].as_str().unwrap().to_owned();
        let order = id.replace('_', "");
        // A form altered on its way is refused: the signature covers every field.
        let mut altered = fields.clone();
        for (k, v) in &mut altered {
            if k == "txnAmt" {
                *v = "1".to_owned();
            }
        }
        let (status, page) = browser_post(&h, url, &altered).await;
        assert_eq!(status, 400, "{page}");
        assert!(page.contains("验证签名失败"), "{page}");
        // As sent, it opens UnionPay's payment page.
        let (status, page) = browser_post(&h, url, &fields).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains(&order), "{page}");
        // The same order posted twice is a duplicate.
        let (status, page) = browser_post(&h, url, &fields).await;
        assert_eq!(status, 400, "{page}");
        // The shopper pays on that page; UnionPay sends the browser back to frontUrl with a
        // signed form, and notifies backUrl, which settles the payment.
        let wallet = format!("http://{}/sandbox/wallet", h.unionpay_addr);
        let (status, back) =
            browser_post(&h, &wallet, &[("code".into(), format!("front:{order}"))]).await;
        assert_eq!(status, 200, "{back}");
        assert!(
            back.contains("action=\"https://shop.example/paid\""),
            "{back}"
        );
        assert!(back.contains("name=\"signature\""), "{back}");
        let paid = h.wait_for(&h.shop_a, &id, "succeeded").await;
        assert_eq!(paid["method"], method, "{paid}");
    }
}
