//! Graceful shutdown drains requests in flight; slow clients cannot hold connections.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::Harness;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_and_refuses_new_ones() {
    let h = Harness::start().await;
    // The provider answers slowly: the create is in flight when the shutdown starts.
    let slow = h
        .sandbox(
            "/sandbox/fault",
            json!({"mode": "slow", "count": 1, "delay_ms": 600}),
        )
        .await;
    assert_eq!(slow.status, 204);
    let client = h.shop_a.clone();
    let in_flight = tokio::spawn(async move {
        let body = json!({"amount": 100, "currency": "CNY", "method": "alipay_qr",
                          "merchant_reference": "g1", "description": "Tea"});
        client
            .call(
                moongate_contract::HttpMethod::Post,
                "/v1/payments",
                body.to_string().as_bytes(),
                Some("g1"),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = h.gateway.addr;
    let Harness { gateway, .. } = h;
    let stopping = tokio::spawn(gateway.shutdown(Duration::from_secs(10)));
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(answer.status, 201, "the request in flight was answered");
    stopping.await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let h = Harness::start().await;
    let mut stream = tokio::net::TcpStream::connect(h.gateway.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The harness allows 1 s for headers; the server closes the connection (maybe with a
    // 408) instead of waiting forever.
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    let text = String::from_utf8_lossy(&buffer);
    assert!(!text.contains("200 OK"), "{text}");
}
