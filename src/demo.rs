//! `moongate demo`: the gateway, the strict Alipay sandbox and a webhook receiver on loopback,
//! with the checked-in demo config and public test keys, then one scripted payment through the
//! real API so the whole path is visible.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use moongate_contract::HttpMethod;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

use crate::client::MerchantClient;
use crate::config;
use crate::sandbox::{self, SandboxSettings};
use crate::server;

/// Where the demo finds its files and which ports it uses.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The `fixtures` folder.
    pub fixtures: PathBuf,
    /// Run the scripted payment.
    pub walkthrough: bool,
    /// Exit after the walkthrough instead of serving until Ctrl-C.
    pub exit_after_walkthrough: bool,
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} on {addr} (is another demo running?)"))
}

/// Verifies a `Moongate-Signature` header against a secret; used by the demo's receiver.
pub fn verify_webhook(header: &str, body: &[u8], secret: &[u8], now: i64, tolerance: i64) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(t) = timestamp else { return false };
    if (now - t).abs() > tolerance {
        return false;
    }
    let Ok(body) = std::str::from_utf8(body) else {
        return false;
    };
    let expected = crate::auth::sign(secret, &format!("{t}.{body}"));
    signatures
        .iter()
        .any(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("?")
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let demo_dir = options.fixtures.join("demo");
    let config_path = demo_dir.join("moongate.toml");
    let raw = config::load(&config_path)?;
    let config = raw.build(&demo_dir)?;
    let gateway_addr = config.listen;

    // 1. The strict Alipay sandbox, with its own key, knowing the demo app's public key.
    let sandbox_settings = SandboxSettings {
        private_key_pem: read(&options.fixtures.join("keys/sandbox-alipay-private-key.pem"))?,
        apps: vec![(
            "2021000122671080".to_owned(),
            read(&options.fixtures.join("keys/nodejs-sdk-app-public-key.pem"))?,
        )],
        time_divisor: 100,
        seller_id: "2088102177846875".to_owned(),
    };
    let sandbox_addr: SocketAddr = ([127, 0, 0, 1], 8090).into();
    let (_sandbox, _sandbox_task) = sandbox::start_on(
        sandbox_settings,
        bind(sandbox_addr, "the Alipay sandbox").await?,
    )
    .await?;

    // 2. A merchant webhook receiver that checks signatures.
    let webhook_secret = config::resolve_secret(
        &moongate_contract::SecretRef::File("webhook.secret".into()),
        &demo_dir,
    )
    .map_err(anyhow::Error::msg)?;
    let receiver_addr: SocketAddr = ([127, 0, 0, 1], 8091).into();
    let receiver = axum::Router::new().route(
        "/webhooks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let secret = webhook_secret.clone();
            async move {
                let header = headers
                    .get("moongate-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                if !verify_webhook(header, &body, secret.as_bytes(), now, 300) {
                    println!("  [webhook] REJECTED: bad signature");
                    return StatusCode::BAD_REQUEST;
                }
                let event: Value = serde_json::from_slice(&body).unwrap_or_default();
                println!(
                    "  [webhook] {} {} (signature ok)",
                    text(&event, "/type"),
                    text(&event, "/data/object/id")
                );
                StatusCode::NO_CONTENT
            }
        }),
    );
    let receiver_listener = bind(receiver_addr, "the webhook receiver").await?;
    tokio::spawn(async move {
        let _ = axum::serve(receiver_listener, receiver).await;
    });

    // 3. Moongate itself, on the embedded SQLite ledger.
    let ledger = config.ledger_path.clone();
    let store = server::open_store(&config)?;
    let running = server::start_on(config, store, bind(gateway_addr, "Moongate").await?).await?;
    println!(
        "Moongate listening on http://{gateway_addr} (ledger {})",
        ledger.display()
    );
    println!(
        "Alipay sandbox on http://{sandbox_addr}/gateway.do; webhook receiver on http://{receiver_addr}/webhooks\n"
    );

    if options.walkthrough {
        walkthrough(gateway_addr, sandbox_addr, &demo_dir).await?;
    }
    println!(
        "\nTry it yourself (the demo merchant's key id is demo_shop_k1, its secret is in fixtures/demo/shop-key.secret):\n\
         \n  examples/moongate-request.sh POST /v1/payments '{{\"amount\":8888,\"currency\":\"CNY\",\"method\":\"alipay_qr\",\"merchant_reference\":\"order-2\",\"description\":\"Tea set\"}}'\
         \n  curl -s -X POST http://{sandbox_addr}/sandbox/pay -H 'content-type: application/json' -d '{{\"out_trade_no\":\"<payment id>\"}}'\
         \n  examples/moongate-request.sh GET /v1/payments/<payment id>\n"
    );
    if options.exit_after_walkthrough {
        running.stop();
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    running.stop();
    Ok(())
}

async fn walkthrough(
    gateway: SocketAddr,
    sandbox: SocketAddr,
    demo_dir: &Path,
) -> anyhow::Result<()> {
    let secret = read(&demo_dir.join("shop-key.secret"))?;
    let client = MerchantClient::new(
        &format!("http://{gateway}"),
        "demo_shop_k1",
        secret.trim_end().as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let reference = format!("demo-{}", time::OffsetDateTime::now_utc().unix_timestamp());
    let body = serde_json::json!({
        "amount": 8888, "currency": "CNY", "method": "alipay_qr",
        "merchant_reference": reference, "description": "Moon cake gift box",
    })
    .to_string();
    println!("1. POST /v1/payments  (¥88.88, alipay_qr)");
    let response = client
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.as_bytes(),
            Some(&reference),
        )
        .await?;
    let payment: Value = serde_json::from_slice(&response.body)?;
    if response.status != 201 {
        bail!(
            "create failed: HTTP {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    let id = text(&payment, "/id").to_owned();
    println!(
        "   -> {} status={} next_action={}",
        id,
        text(&payment, "/status"),
        payment.pointer("/next_action").unwrap_or(&Value::Null)
    );

    println!("2. The shopper scans and pays (sandbox control endpoint)");
    let pay = crate::outbound::Outbound::new(Duration::from_secs(2), Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let request = moongate_contract::HttpRequest {
        method: HttpMethod::Post,
        url: format!("http://{sandbox}/sandbox/pay"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::json!({ "out_trade_no": id })
            .to_string()
            .into_bytes(),
    };
    let paid = pay.send(&request).await?;
    println!("   -> {}", String::from_utf8_lossy(&paid.body));

    println!("3. Alipay notifies Moongate; GET /v1/payments/{id}");
    let mut status = String::new();
    for _ in 0..50 {
        let response = client
            .call(HttpMethod::Get, &format!("/v1/payments/{id}"), b"", None)
            .await?;
        let payment: Value = serde_json::from_slice(&response.body)?;
        status = text(&payment, "/status").to_owned();
        if status == "succeeded" {
            println!(
                "   -> status=succeeded transaction={}",
                text(&payment, "/provider/transaction_id")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if status != "succeeded" {
        bail!("the payment did not succeed (status {status})");
    }

    println!("4. POST /v1/payments/{id}/refunds  (partial, ¥8.88)");
    let refund_key = format!("{reference}-refund-1");
    let response = client
        .call(
            HttpMethod::Post,
            &format!("/v1/payments/{id}/refunds"),
            br#"{"amount":888,"reason":"broken box"}"#,
            Some(&refund_key),
        )
        .await?;
    let refund: Value = serde_json::from_slice(&response.body)?;
    println!(
        "   -> {} status={}",
        text(&refund, "/id"),
        text(&refund, "/status")
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    Ok(())
}
