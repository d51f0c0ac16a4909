//! The janitor: open payments and refunds are re-checked at their provider on a backing-off
//! schedule, so a lost notification never leaves money unrecorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Harness;
use serde_json::json;
use time::{Duration, OffsetDateTime};

on_both_ledgers!(
    lost_notifications_are_recovered_by_the_janitor,
    checks_back_off_and_expired_payments_are_closed,
    a_refund_left_unknown_is_resolved,
);

fn qr(reference: &str) -> serde_json::Value {
    json!({"amount": 700, "currency": "CNY", "method": "alipay_qr",
           "merchant_reference": reference, "description": "Tea"})
}

async fn lost_notifications_are_recovered_by_the_janitor(h: Harness) {
    let start = OffsetDateTime::now_utc();
    let (_, alipay) = h.create_with(&h.shop_a, qr("j1"), "j1").await;
    let alipay_id = alipay["id"].as_str().unwrap().to_owned();
    let (_, wechat) = h
        .create_with(
            &h.shop_a,
            json!({"amount": 800, "currency": "CNY", "method": "wechat_native",
                   "merchant_reference": "j2", "description": "Tea"}),
            "j2",
        )
        .await;
    let wechat_id = wechat["id"].as_str().unwrap().to_owned();
    // Both shoppers pay; neither notification arrives.
    let paid = h
        .sandbox(
            "/sandbox/pay",
            json!({"out_trade_no": alipay_id, "notify": false}),
        )
        .await;
    assert_eq!(paid.status, 200);
    let paid = h
        .wechat(
            "/sandbox/pay",
            json!({"out_trade_no": wechat_id, "notify": false}),
        )
        .await;
    assert_eq!(paid.status, 200);
    assert!(h.sandbox_notifications(&alipay_id).await.is_empty());
    assert!(h.wechat_notifications(&wechat_id).await.is_empty());
    let gw = &h.gateway.gateway;
    // Nothing is due right away: a new payment's own call may still be running.
    assert_eq!(gw.janitor_once(start).await.unwrap(), 0);
    // Thirty seconds on, both are checked and found paid.
    assert_eq!(
        gw.janitor_once(start + Duration::seconds(31))
            .await
            .unwrap(),
        2
    );
    for id in [&alipay_id, &wechat_id] {
        let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
        assert_eq!(payment["status"], "succeeded", "{payment}");
    }
}

async fn checks_back_off_and_expired_payments_are_closed(h: Harness) {
    let start = OffsetDateTime::now_utc();
    let mut body = qr("j3");
    body["expires_in_seconds"] = json!(600);
    let (_, payment) = h.create_with(&h.shop_a, body, "j3").await;
    let id = payment["id"].as_str().unwrap().to_owned();
    let gw = &h.gateway.gateway;
    // Unpaid and unexpired: checked at +30 s, then not again until a minute later.
    let first = start + Duration::seconds(31);
    assert_eq!(gw.janitor_once(first).await.unwrap(), 1);
    assert_eq!(
        gw.janitor_once(first + Duration::seconds(59))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        gw.janitor_once(first + Duration::seconds(61))
            .await
            .unwrap(),
        1
    );
    let (_, still) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(still["status"], "requires_action");
    // Past its deadline (and a minute's grace) it is closed at the provider.
    let late = start + Duration::seconds(600 + 61 + 3600);
    assert_eq!(gw.janitor_once(late).await.unwrap(), 1);
    let (_, closed) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(closed["status"], "canceled", "{closed}");
    assert_eq!(gw.janitor_once(late + Duration::days(2)).await.unwrap(), 0);
}

async fn a_refund_left_unknown_is_resolved(h: Harness) {
    let id = h.paid_payment(1000, "j4").await;
    h.fault("garbage", 1).await;
    let (status, refund) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount":300}"#,
            "j4-r",
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(refund["status"], "unknown", "{refund}");
    let later = OffsetDateTime::now_utc() + Duration::seconds(31);
    assert!(h.gateway.gateway.janitor_once(later).await.unwrap() >= 1);
    let (_, refund) = h
        .get(
            &h.shop_a,
            &format!("/v1/refunds/{}", refund["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(refund["status"], "succeeded", "{refund}");
}
