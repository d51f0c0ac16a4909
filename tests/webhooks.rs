//! Webhook delivery keeps merchants apart (issue 18): a merchant whose endpoint accepts
//! connections and never answers delays only its own events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;

on_both_ledgers!(
    a_hanging_endpoint_delays_only_its_own_merchant,
    events_parked_by_an_outage_are_listed_and_resent,
);

async fn events_parked_by_an_outage_are_listed_and_resent(h: Harness) {
    // Shop B's endpoint is down (nothing listens) for longer than its retry schedule.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/hooks", closed.local_addr().unwrap());
    drop(closed);
    h.shop_b_webhook(&down);
    let mut ids = Vec::new();
    for i in 0..2 {
        let (status, payment) = h.create(&h.shop_b, 100, &format!("out-{i}")).await;
        assert_eq!(status, 201);
        ids.push(payment["id"].as_str().unwrap().to_owned());
    }
    // All four events end parked (5 attempts, 50-200 ms apart), and the list finds them.
    let started = Instant::now();
    let parked = loop {
        let (status, list) = h
            .get(&h.shop_b, "/v1/events?delivery_status=parked&limit=100")
            .await;
        assert_eq!(status, 200, "{list}");
        if list["data"].as_array().unwrap().len() == 4 {
            break list;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not parked: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        parked["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["delivery"]["status"] == "parked" && e["delivery"]["attempts"] == 5)
    );
    // Filters and pages.
    let (_, created) = h.get(&h.shop_b, "/v1/events?type=payment.created").await;
    assert_eq!(created["data"].as_array().unwrap().len(), 2);
    let (_, one) = h
        .get(&h.shop_b, &format!("/v1/events?object_id={}", ids[0]))
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 2);
    let (_, page) = h.get(&h.shop_b, "/v1/events?limit=3").await;
    assert_eq!(
        (
            page["data"].as_array().unwrap().len(),
            page["has_more"].as_bool()
        ),
        (3, Some(true))
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = h
        .get(
            &h.shop_b,
            &format!("/v1/events?limit=3&starting_after={cursor}"),
        )
        .await;
    assert_eq!(
        (
            rest["data"].as_array().unwrap().len(),
            rest["has_more"].as_bool()
        ),
        (1, Some(false))
    );
    // The operator's command sees the same.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_moongate"))
        .args(["events", "--config"])
        .arg(&h.config_path)
        .args(["list", "--merchant", "shop_b", "--status", "parked"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("4 event(s)"), "{printed}");
    assert!(
        printed.contains(&ids[0]) && printed.contains("parked"),
        "{printed}"
    );
    // Another merchant sees none of them.
    let (_, others) = h
        .get(&h.shop_a, &format!("/v1/events?object_id={}", ids[0]))
        .await;
    assert_eq!(others["data"].as_array().unwrap().len(), 0);
    // The endpoint is back: one call queues every parked event, and they arrive.
    // The harness's receiver: shop A's webhook URL (the first in the file).
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let receiver = text
        .split("webhook = { url = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    h.shop_b_webhook(&receiver);
    let (status, resent) = h
        .post(&h.shop_b, "/v1/events/resend", "{}", "resend-all")
        .await;
    assert_eq!(status, 200, "{resent}");
    assert_eq!(
        (resent["queued"].as_u64(), resent["has_more"].as_bool()),
        (Some(4), Some(false))
    );
    let delivered = |id: &str| {
        h.webhooks
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.body.contains(id))
            .count()
    };
    let started = Instant::now();
    while !ids.iter().all(|id| delivered(id) >= 2) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "resent events not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, left) = h.get(&h.shop_b, "/v1/events?delivery_status=parked").await;
    assert_eq!(left["data"].as_array().unwrap().len(), 0);
    let (_, done) = h
        .get(&h.shop_b, "/v1/events?delivery_status=delivered&limit=100")
        .await;
    assert_eq!(done["data"].as_array().unwrap().len(), 4);
}

async fn a_hanging_endpoint_delays_only_its_own_merchant(h: Harness) {
    // An endpoint that takes connections and never answers (each held open).
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hang.accept().await {
            held.push(stream);
        }
    });
    // Shop B's webhooks go there (the harness's webhook timeout is 2 s, 5 attempts).
    h.shop_b_webhook(&format!("http://{hang_addr}/hooks"));
    // Shop B's backlog first: 40 events due, far more than one claim.
    for i in 0..20 {
        let (status, _) = h.create(&h.shop_b, 100, &format!("b-{i}")).await;
        assert_eq!(status, 201);
    }
    // Then shop A's payments: their events arrive while shop B's endpoint hangs.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, payment) = h.create(&h.shop_a, 100, &format!("a-{i}")).await;
        assert_eq!(status, 201);
        ids.push(payment["id"].as_str().unwrap().to_owned());
    }
    let delivered = |id: &str| {
        h.webhooks
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.body.contains(id))
            .count()
    };
    // Each payment has two events (created, requires_action). Before, the worker took the 8
    // oldest due events of all merchants and waited for the batch: shop A waited behind
    // shop B's 2 s timeouts, batch after batch, for well over 10 s.
    loop {
        if ids.iter().all(|id| delivered(id) >= 2) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "shop A's webhooks are held up by shop B's hanging endpoint: {:?}",
            ids.iter().map(|id| delivered(id)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
