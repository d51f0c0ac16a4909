//! Schedules, leases and deadlines keep Moongate's clock when the system clock steps (issue
//! 18): a step back holds back no retry and no sweep, a step forward closes nothing early, and
//! a restart or a second instance whose clock is wrong keeps the ledger's time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::Harness;
use serde_json::{Value, json};

on_both_ledgers!(
    a_step_back_holds_back_no_webhook_retry,
    a_step_back_holds_back_no_sweep,
    a_step_forward_closes_no_open_order_early,
    a_restart_with_a_wrong_clock_keeps_the_ledgers_time,
);

const HOUR: time::Duration = time::Duration::hours(1);

/// Sets the webhook backoff (a config reload): long enough that a retry is surely still
/// scheduled when the test steps the clock.
fn backoff(h: &Harness, initial_ms: u64, max_ms: u64) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let text = text.replace(
        "initial_backoff_ms = 50\nmax_backoff_ms = 200\n",
        &format!("initial_backoff_ms = {initial_ms}\nmax_backoff_ms = {max_ms}\n"),
    );
    std::fs::write(&h.config_path, text).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
}

/// Steps the system clock of the gateway, and those of the storefronts and of the Alipay
/// sandbox with it (so that only Moongate's own schedules could notice).
async fn step(h: &Harness, by: time::Duration) {
    h.gateway.gateway.clock.step_wall(by);
    let skew = by.whole_seconds();
    h.shop_a.set_clock_skew(skew);
    h.shop_b.set_clock_skew(skew);
    assert_eq!(
        h.sandbox("/sandbox/clock", json!({ "skew_secs": skew }))
            .await
            .status,
        204
    );
}

async fn sweep(h: &Harness) -> Value {
    let admin = h.gateway.admin_addr.unwrap();
    let answer = h.control(admin, "/janitor/sweep", json!({})).await;
    assert_eq!(answer.status, 200);
    serde_json::from_slice(&answer.body).unwrap()
}

async fn a_step_back_holds_back_no_webhook_retry(h: Harness) {
    // Shop B's endpoint fails its first request and takes the rest; it notes the event ids.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = Arc::clone(&seen);
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let log = Arc::clone(&log);
            async move {
                let id = headers
                    .get("moongate-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let mut log = log.lock().unwrap();
                log.push(id);
                if log.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });
    backoff(&h, 2_000, 4_000);
    h.shop_b_webhook(&format!("http://{addr}/hooks"));
    let (status, payment) = h.create(&h.shop_b, 100, "step-back-hook").await;
    assert_eq!(status, 201, "{payment}");
    // The first attempt failed and its retry is scheduled (1.6-2.4 s later) ...
    let mut failed = None;
    for _ in 0..100 {
        failed = seen.lock().unwrap().first().cloned();
        if failed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("/v1/events/{}", failed.expect("a first delivery"));
    let event = wait_until(&h, &path, |e| e["delivery"]["attempts"] == 1).await;
    assert_eq!(event["delivery"]["status"], "pending", "{event}");
    // ... when the system clock steps back an hour.
    step(&h, -HOUR).await;
    let started = Instant::now();
    let event = wait_until(&h, &path, |e| e["delivery"]["status"] == "delivered").await;
    assert_eq!(event["delivery"]["attempts"], 2, "{event}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn a_step_back_holds_back_no_sweep(h: Harness) {
    // The create's answer is lost: the payment is `unknown` until a check asks.
    h.fault("garbage", 1).await;
    let (status, payment) = h.create(&h.shop_a, 100, "step-back-sweep").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "unknown");
    let id = payment["id"].as_str().unwrap();
    step(&h, -HOUR).await;
    // A sweep checks everything open, however recent by the clock that stepped.
    let swept = sweep(&h).await;
    assert_eq!(swept["checked"], 1, "{swept}");
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["status"], "requires_action", "{payment}");
}

async fn a_step_forward_closes_no_open_order_early(h: Harness) {
    // A QR payment nobody has scanned yet, due to expire in two hours.
    let (status, payment) = h.create(&h.shop_a, 100, "step-forward").await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action");
    let id = payment["id"].as_str().unwrap();
    step(&h, 3 * HOUR).await;
    // The provider knows no trade for an unscanned code: only a passed deadline would close it.
    let swept = sweep(&h).await;
    assert_eq!(swept["checked"], 1, "{swept}");
    let (_, payment) = h.get(&h.shop_a, &format!("/v1/payments/{id}")).await;
    assert_eq!(payment["status"], "requires_action", "{payment}");
    // The shopper can still pay it.
    assert_eq!(
        h.sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await
            .status,
        200
    );
    h.wait_for(&h.shop_a, id, "succeeded").await;
}

async fn a_restart_with_a_wrong_clock_keeps_the_ledgers_time(h: Harness) {
    let first = &h.gateway.gateway;
    // The running instance records its time (every janitor pass does).
    first.sync_clock().await.unwrap();
    // Another process on the same ledger whose system clock is an hour behind: a restart after
    // a step back (SQLite), or a second instance with a skewed clock (PostgreSQL).
    let config = moongate::config::load(&h.config_path)
        .unwrap()
        .build(h.config_path.parent().unwrap())
        .unwrap();
    let store = moongate::server::open_store(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let clock = moongate::clock::Clock::with_wall_shift(-HOUR);
    let second = moongate::server::start_with_clock(config, store, listener, clock)
        .await
        .unwrap();
    let gap = second.gateway.now() - first.now();
    assert!(gap.abs() < time::Duration::seconds(1), "{gap}");
    assert!(second.gateway.clock.wall_ahead() < -59 * time::Duration::MINUTE);
    second.stop();
}

/// GETs `path` as shop B until `done` holds (10 s at most).
async fn wait_until(h: &Harness, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = h.get(&h.shop_b, path).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {last}");
}
