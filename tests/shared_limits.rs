#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Merchant limits shared by several instances through Redis (GCRA on the Redis server's
//! clock), and the fall-back to local limits when Redis is down.
//!
//! The Redis tests need `MOONGATE_TEST_REDIS_URL` (`.ci/run` sets it to the local Redis, so CI
//! always runs them and fails if Redis is unreachable); without it they say they are skipped.

mod common;

use std::time::Duration;

use common::Harness;
use moongate::shared_limits::{SharedDecision, SharedLimiter};
use moongate_contract::HttpMethod;

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("MOONGATE_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "{test}: SKIPPED (set MOONGATE_TEST_REDIS_URL, e.g. redis://127.0.0.1:6379/15; .ci/run does)"
            );
            None
        }
    }
}

fn unique_prefix() -> String {
    moongate::ledger::new_id("t")
}

#[tokio::test]
async fn two_instances_draw_from_one_bucket() {
    let Some(url) = redis_url("two_instances_draw_from_one_bucket") else {
        return;
    };
    let prefix = unique_prefix();
    let a = SharedLimiter::new(&url, Duration::from_millis(500), &prefix).unwrap();
    let b = SharedLimiter::new(&url, Duration::from_millis(500), &prefix).unwrap();
    // The first answer proves Redis is reachable: CI must not pass by falling back.
    assert_eq!(a.check("merchant:m", 1, 5).await, SharedDecision::Allowed);
    let mut allowed = 1;
    let mut retry = None;
    for i in 0..9 {
        let limiter = if i % 2 == 0 { &b } else { &a };
        match limiter.check("merchant:m", 1, 5).await {
            SharedDecision::Allowed => allowed += 1,
            SharedDecision::Limited(wait) => retry = Some(wait),
            SharedDecision::Unavailable(reason) => panic!("Redis unavailable: {reason}"),
        }
    }
    // Burst 5 across both instances, not 5 each (a refill may add one on a slow machine).
    assert!((5..=6).contains(&allowed), "{allowed} allowed");
    let retry = retry.expect("over the burst");
    assert!(retry <= Duration::from_secs(1), "{retry:?}");
    // Another key is another bucket.
    assert_eq!(
        b.check("merchant:other", 1, 5).await,
        SharedDecision::Allowed
    );
}

async fn statuses(h: &Harness, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = h
            .shop_c
            .call(HttpMethod::Get, "/v1/payments", b"", None)
            .await
            .unwrap();
        out.push(response.status);
    }
    out
}

#[tokio::test]
async fn a_merchant_limit_holds_across_two_gateways() {
    let Some(url) = redis_url("a_merchant_limit_holds_across_two_gateways") else {
        return;
    };
    // Both gateways share the Redis (and the key prefix): shop_c may send 1/s, burst 5, in all.
    // A fresh database number would be cleaner; a fresh merchant key is enough here.
    let one = Harness::start_with_redis(&url).await;
    let two = Harness::start_with_redis(&url).await;
    // Start from an empty bucket for shop_c (an earlier run may have left a TAT behind).
    let client = redis_client(&url);
    let _: () = redis::AsyncCommands::del(&mut client.await, "moongate:rl:merchant:shop_c")
        .await
        .unwrap();
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend(statuses(&one, 1).await);
        all.extend(statuses(&two, 1).await);
    }
    let passed = all.iter().filter(|s| **s == 200).count();
    assert!((5..=6).contains(&passed), "{all:?}");
    assert!(all.contains(&429), "{all:?}");
    let metrics = one.gateway.gateway.metrics.render();
    assert!(metrics.contains("moongate_shared_limit_up 1"), "{metrics}");
}

async fn redis_client(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn with_redis_down_local_limits_still_apply_and_say_so() {
    // Nothing listens on port 1: every shared check is unavailable.
    let h = Harness::start_with_redis("redis://127.0.0.1:1/0").await;
    let all = statuses(&h, 8).await;
    let passed = all.iter().filter(|s| **s == 200).count();
    assert!((5..=6).contains(&passed), "{all:?}");
    assert!(all.contains(&429), "{all:?}");
    let metrics = h.gateway.gateway.metrics.render();
    assert!(metrics.contains("moongate_shared_limit_up 0"), "{metrics}");
    assert!(
        metrics.contains("moongate_shared_limit_checks_total{outcome=\"unavailable\"}"),
        "{metrics}"
    );
}
