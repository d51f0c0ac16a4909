//! Failover across a priority list: only when the provider certainly did not take the order;
//! never on an unknown outcome. Circuit breakers rest a failing account.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::Harness;
use serde_json::{Value, json};

on_both_ledgers!(
    a_refused_connection_fails_over_to_the_next_account,
    a_refused_signature_fails_over_too,
    an_unknown_outcome_never_fails_over,
    a_failing_account_opens_its_circuit_and_is_skipped,
    a_response_lost_after_the_order_was_created_is_resolved_by_query_not_failover,
    an_open_circuit_and_used_limits_survive_a_reload_of_unchanged_settings,
);

fn body(reference: &str, path: &str) -> Value {
    json!({
        "amount": 2000, "currency": "CNY", "method": "alipay_qr",
        "merchant_reference": reference, "description": "Tea", "metadata": {"path": path},
    })
}

async fn attempts(h: &Harness, id: &str) -> Vec<(String, String)> {
    h.gateway
        .gateway
        .store
        .attempts_for(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.account_id, a.operation.to_owned()))
        .collect()
}

async fn a_refused_connection_fails_over_to_the_next_account(h: Harness) {
    let (status, payment) = h.create_with(&h.shop_d, body("f1", "refused"), "f1").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action", "{payment}");
    assert_eq!(payment["provider"]["account"], "good");
    assert_eq!(payment["provider"]["route"], "refused-first");
    let id = payment["id"].as_str().unwrap();
    assert_eq!(
        attempts(&h, id).await,
        vec![
            ("dead".to_owned(), "create".to_owned()),
            ("good".to_owned(), "create".to_owned())
        ]
    );
    // The order lives at the account the ledger names: paying it works end to end.
    let paid = h.sandbox("/sandbox/pay", json!({"out_trade_no": id})).await;
    assert_eq!(paid.status, 200);
    h.wait_for(&h.shop_d, id, "succeeded").await;
}

async fn a_refused_signature_fails_over_too(h: Harness) {
    let (status, payment) = h.create_with(&h.shop_d, body("f2", "rejected"), "f2").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action", "{payment}");
    assert_eq!(payment["provider"]["account"], "good");
    let id = payment["id"].as_str().unwrap();
    let tried: Vec<String> = attempts(&h, id).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(tried, ["wrong_key", "good"]);
}

async fn an_unknown_outcome_never_fails_over(h: Harness) {
    // The good account's call times out after it was sent: the order may exist there.
    h.fault("timeout", 1).await;
    let before = h.provider_calls(h.sandbox_addr).await;
    let (status, payment) = h.create_with(&h.shop_d, body("f3", "good"), "f3").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "unknown", "{payment}");
    assert_eq!(
        payment["provider"]["account"], "good",
        "stays where it may exist"
    );
    let id = payment["id"].as_str().unwrap();
    let tried: Vec<String> = attempts(&h, id).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(tried, ["good"], "the dead fallback was never tried");
    assert_eq!(h.provider_calls(h.sandbox_addr).await, before + 1);
}

async fn a_failing_account_opens_its_circuit_and_is_skipped(h: Harness) {
    // Ten refused connections (the default minimum), every one failed over to `good`.
    for i in 0..10 {
        let key = format!("c{i}");
        let (_, payment) = h.create_with(&h.shop_d, body(&key, "refused"), &key).await;
        assert_eq!(payment["provider"]["account"], "good", "{payment}");
    }
    let admin = h.gateway.admin_addr.unwrap();
    let circuits: Value =
        serde_json::from_slice(&h.http_get(&format!("http://{admin}/circuits")).await.body)
            .unwrap();
    let state = |account: &str| {
        circuits["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["merchant"] == "shop_d" && a["account"] == account)
            .map(|a| a["circuit"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(state("dead"), "open");
    assert_eq!(state("good"), "closed");
    // Now the dead account is not even called: straight to the next one.
    let (_, payment) = h
        .create_with(&h.shop_d, body("c10", "refused"), "c10")
        .await;
    assert_eq!(payment["provider"]["account"], "good");
    let id = payment["id"].as_str().unwrap();
    let tried: Vec<String> = attempts(&h, id).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(tried, ["good"]);
}

async fn circuit_of(h: &Harness, merchant: &str, account: &str) -> String {
    let admin = h.gateway.admin_addr.unwrap();
    let circuits: Value =
        serde_json::from_slice(&h.http_get(&format!("http://{admin}/circuits")).await.body)
            .unwrap();
    circuits["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["merchant"] == merchant && a["account"] == account)
        .map(|a| a["circuit"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn an_open_circuit_and_used_limits_survive_a_reload_of_unchanged_settings(h: Harness) {
    for i in 0..10 {
        let key = format!("r{i}");
        let (_, payment) = h.create_with(&h.shop_d, body(&key, "refused"), &key).await;
        assert_eq!(payment["provider"]["account"], "good", "{payment}");
    }
    assert_eq!(circuit_of(&h, "shop_d", "dead").await, "open");
    let limiters = |h: &Harness| {
        let config = h.gateway.gateway.config();
        let shop_c = &config.merchants["shop_c"];
        (
            std::sync::Arc::clone(&shop_c.limit),
            std::sync::Arc::clone(shop_c.accounts[0].limit.as_ref().unwrap()),
        )
    };
    let (merchant_limit, account_limit) = limiters(&h);

    // The same file again (as a SIGHUP after editing another merchant would do).
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    assert_eq!(
        circuit_of(&h, "shop_d", "dead").await,
        "open",
        "a reload closed the circuit of an account it did not change"
    );
    let (merchant_after, account_after) = limiters(&h);
    assert!(std::sync::Arc::ptr_eq(&merchant_limit, &merchant_after));
    assert!(std::sync::Arc::ptr_eq(&account_limit, &account_after));
    // Still skipped: straight to the next account.
    let (_, payment) = h
        .create_with(&h.shop_d, body("r10", "refused"), "r10")
        .await;
    let id = payment["id"].as_str().unwrap();
    let tried: Vec<String> = attempts(&h, id).await.into_iter().map(|(a, _)| a).collect();
    assert_eq!(tried, ["good"]);

    // Changing the account (here: a call limit) starts its circuit afresh; changing shop_c's
    // limits gives it new limiters.
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let changed = text
        .replace(
            "[merchants.shop_d.accounts.dead]\nprovider = \"alipay\"\n",
            "[merchants.shop_d.accounts.dead]\nprovider = \"alipay\"\nrate_limit = { requests_per_second = 5, burst = 5 }\n",
        )
        .replace(
            "rate_limit = { requests_per_second = 1, burst = 5 }",
            "rate_limit = { requests_per_second = 2, burst = 5 }",
        )
        .replace(
            "rate_limit = { requests_per_second = 1, burst = 1, max_wait_ms = 100 }",
            "rate_limit = { requests_per_second = 2, burst = 1, max_wait_ms = 100 }",
        );
    assert_ne!(changed, text, "the fixture must contain the edited lines");
    std::fs::write(&h.config_path, &changed).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    assert_eq!(circuit_of(&h, "shop_d", "dead").await, "closed");
    let (merchant_after, account_after) = limiters(&h);
    assert!(!std::sync::Arc::ptr_eq(&merchant_limit, &merchant_after));
    assert!(!std::sync::Arc::ptr_eq(&account_limit, &account_after));
}

async fn a_response_lost_after_the_order_was_created_is_resolved_by_query_not_failover(h: Harness) {
    // Alipay: the precreate is processed, then the answer never comes.
    h.fault("drop_after_create", 1).await;
    let (_, payment) = h.create_with(&h.shop_d, body("d1", "good"), "d1").await;
    assert_eq!(payment["status"], "unknown", "{payment}");
    assert_eq!(payment["provider"]["account"], "good");
    let id = payment["id"].as_str().unwrap().to_owned();
    // WeChat Pay: the same, with a slow (but answered) call first.
    let slow = h
        .wechat(
            "/sandbox/fault",
            json!({"mode": "slow", "count": 1, "delay_ms": 200}),
        )
        .await;
    assert_eq!(slow.status, 204);
    let native = json!({
        "amount": 500, "currency": "CNY", "method": "wechat_native",
        "merchant_reference": "d2", "description": "Tea",
    });
    let (_, answered) = h.create_with(&h.shop_a, native.clone(), "d2").await;
    assert_eq!(
        answered["status"], "requires_action",
        "a slow answer is still an answer"
    );
    let dropped = h
        .wechat(
            "/sandbox/fault",
            json!({"mode": "drop_after_create", "count": 1}),
        )
        .await;
    assert_eq!(dropped.status, 204);
    let mut native = native;
    native["merchant_reference"] = json!("d3");
    let (_, wechat) = h.create_with(&h.shop_a, native, "d3").await;
    assert_eq!(wechat["status"], "unknown", "{wechat}");
    let wechat_id = wechat["id"].as_str().unwrap().to_owned();
    // The re-check asks the provider that may hold the order, and learns its QR again.
    h.gateway
        .gateway
        .recheck_once(std::time::Duration::ZERO)
        .await
        .unwrap();
    for (client, id) in [(&h.shop_d, &id), (&h.shop_a, &wechat_id)] {
        let payment = h.wait_for(client, id, "requires_action").await;
        assert_eq!(payment["next_action"]["type"], "display_qr", "{payment}");
    }
    let tried: Vec<String> = attempts(&h, &id)
        .await
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert!(
        tried.iter().all(|a| a == "good"),
        "never failed over: {tried:?}"
    );
    // The sandbox holds one order per payment: paying it settles the payment.
    let paid = h
        .wechat("/sandbox/pay", json!({"out_trade_no": wechat_id}))
        .await;
    assert_eq!(paid.status, 200);
    h.wait_for(&h.shop_a, &wechat_id, "succeeded").await;
}
