//! Webhook delivery keeps merchants apart (issue 18): a merchant whose endpoint accepts
//! connections and never answers delays only its own events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;

on_both_ledgers!(a_hanging_endpoint_delays_only_its_own_merchant);

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
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let text = text.replacen(
        "name = \"Shop B\"\n",
        &format!(
            "name = \"Shop B\"\nwebhook = {{ url = \"http://{hang_addr}/hooks\", secrets = [{{ file = \"w-old.secret\" }}] }}\n"
        ),
        1,
    );
    std::fs::write(&h.config_path, text).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
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
