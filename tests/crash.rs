//! Crash and fault harness: payments driven through a real `moongate serve` process against the
//! strict sandboxes with faults on, the process killed with SIGKILL at random moments and
//! restarted, then the ledger compared with the providers' truth.
//!
//! Proves: every order a sandbox holds as paid is `succeeded` with the right amount; no payment
//! has an order at two providers, and every provider order has its ledger payment; every
//! refund the provider made is `succeeded`, and no refund exceeds its payment; every event the
//! ledger holds reached the merchant's webhook at least once, under one stable id.
//!
//! Bounded: `MOONGATE_CRASH_PAYMENTS` payments (default 2,000; `scripts/soak.sh` runs more).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{APP_ID, MCHID_A, MERCHANT_SERIAL, PUB_KEY_ID, WX_APPID, fixtures};
use moongate::outbound::Outbound;
use moongate_contract::{HttpMethod, HttpRequest};
use moongate_testkit::client::MerchantClient;
use moongate_testkit::sandbox::wechat::{KeyMode, SandboxMerchant, WechatSandboxSettings};
use moongate_testkit::sandbox::{self, SandboxSettings};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const SECRET: &str = "crash-shop-signing-secret-012345";
const WEBHOOK_SECRET: &str = "crash-webhook-secret-0123456789";
/// Kills while payments flow (then one more before the final checks): one per this many
/// payments, at least [`MIN_KILLS`], so a longer soak is killed more often.
const PAYMENTS_PER_KILL: usize = 400;
const MIN_KILLS: usize = 5;

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A tiny deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Gateway {
    child: Option<Child>,
    config: PathBuf,
}

impl Gateway {
    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_moongate"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush, mid-whatever-it-was-doing.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_healthy(http: &Outbound, admin: SocketAddr) {
    for _ in 0..200 {
        let request = HttpRequest {
            method: HttpMethod::Get,
            url: format!("http://{admin}/healthz"),
            headers: vec![],
            body: vec![],
        };
        if matches!(http.send(&request).await, Ok(r) if r.status == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("moongate did not come up");
}

/// Calls the API until an answer comes (the process may be down): same key, same body.
async fn call(
    client: &MerchantClient,
    method: HttpMethod,
    path: &str,
    body: &str,
    key: &str,
) -> Value {
    for _ in 0..600 {
        match client.call(method, path, body.as_bytes(), Some(key)).await {
            Ok(response) if response.status == 409 || response.status >= 500 => {}
            Ok(response) => return serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer for {path} with key {key}");
}

async fn control(http: &Outbound, sandbox: SocketAddr, path: &str, body: Value) -> u16 {
    let request = HttpRequest {
        method: HttpMethod::Post,
        url: format!("http://{sandbox}{path}"),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
    };
    http.send(&request).await.map(|r| r.status).unwrap_or(0)
}

fn config_text(
    addr: SocketAddr,
    admin: SocketAddr,
    alipay: SocketAddr,
    wechat: SocketAddr,
    hook: SocketAddr,
) -> String {
    let keys = fixtures().join("keys");
    let key = |name: &str| keys.join(name).display().to_string();
    format!(
        r#"
[server]
listen = "{addr}"
public_base_url = "http://{addr}"
admin_listen = "{admin}"

[ledger]
path = "ledger.db"

[webhooks]
initial_backoff_ms = 20
max_backoff_ms = 200
max_attempts = 1000
timeout_ms = 2000

[providers]
connect_timeout_ms = 500
call_timeout_ms = 1000
recheck_interval_ms = 300

[merchants.shop]
name = "Crash Shop"
keys = [{{ id = "shop_k1", secret = {{ file = "shop.secret" }} }}]
webhook = {{ url = "http://{hook}/hooks", secrets = [{{ file = "hook.secret" }}] }}
rate_limit = {{ requests_per_second = 100000, burst = 100000 }}

[merchants.shop.accounts.alipay]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app}" }}, alipay_public_key = {{ file = "{alipay_pub}" }}, gateway_url = "http://{alipay}/gateway.do" }}

[merchants.shop.accounts.wechat]
provider = "wechatpay"
[merchants.shop.accounts.wechat.settings]
mchid = "{MCHID_A}"
appid = "{WX_APPID}"
merchant_serial_no = "{MERCHANT_SERIAL}"
merchant_private_key = {{ file = "{wx}" }}
apiv3_key = {{ file = "apiv3.secret" }}
wechatpay_public_key = {{ file = "{wx_pub}" }}
wechatpay_public_key_id = "{PUB_KEY_ID}"
api_base_url = "http://{wechat}"
"#,
        app = key("nodejs-sdk-app-private-key.pem"),
        alipay_pub = key("sandbox-alipay-public-key.pem"),
        wx = key("wechatpay-go-merchant-private-key.pem"),
        wx_pub = key("sandbox-wechatpay-public-key.pem"),
    )
}

fn ledger(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_survive_kills_and_faults() {
    let payments: usize = std::env::var("MOONGATE_CRASH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let seed = std::env::var("MOONGATE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(time::OffsetDateTime::now_utc().nanosecond()) | 1);
    println!("crash harness: {payments} payments, seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let keys = fixtures().join("keys");
    let read = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();

    // The providers, in this process, so their truth can be read at the end.
    let alipay_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alipay_addr = alipay_listener.local_addr().unwrap();
    let (alipay, _) = sandbox::start_on(
        SandboxSettings {
            private_key_pem: read("sandbox-alipay-private-key.pem"),
            apps: vec![(APP_ID.to_owned(), read("nodejs-sdk-app-public-key.pem"))],
            time_divisor: 20_000,
            seller_id: "2088102177846875".to_owned(),
            certificate_mode: None,
            authorisations: vec![],
            callback_domains: vec![],
        },
        alipay_listener,
    )
    .await
    .unwrap();
    let wechat_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let wechat_addr = wechat_listener.local_addr().unwrap();
    let (wechat, _) = sandbox::wechat::start_on(
        WechatSandboxSettings {
            private_key_pem: read("sandbox-wechatpay-private-key.pem"),
            certificate_pem: read("sandbox-wechatpay-platform-cert.pem"),
            certificate_serial: common::CERT_SERIAL.to_owned(),
            public_key_id: PUB_KEY_ID.to_owned(),
            merchants: vec![SandboxMerchant {
                mchid: MCHID_A.to_owned(),
                appids: vec![WX_APPID.to_owned()],
                merchant_serial_no: MERCHANT_SERIAL.to_owned(),
                merchant_public_key_pem: read("wechatpay-go-merchant-public-key.pem"),
                apiv3_key: common::APIV3_KEY_A.to_owned(),
                api_v2_key: None,
                key_mode: KeyMode::PublicKey,
                sub_merchants: vec![],
            }],
            time_divisor: 20_000,
            official_accounts: vec![],
        },
        wechat_listener,
    )
    .await
    .unwrap();

    // The merchant's webhook endpoint: every event id it receives.
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let sink = Arc::clone(&received);
    let hook_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = hook_listener.local_addr().unwrap();
    let receiver = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move |headers: HeaderMap, _body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let id = headers
                    .get("moongate-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                *sink.lock().unwrap().entry(id).or_default() += 1;
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(hook_listener, receiver).await.unwrap() });

    std::fs::write(dir.path().join("shop.secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("hook.secret"), WEBHOOK_SECRET).unwrap();
    std::fs::write(dir.path().join("apiv3.secret"), common::APIV3_KEY_A).unwrap();
    let addr = free_port();
    let admin = free_port();
    let config = dir.path().join("moongate.toml");
    std::fs::write(
        &config,
        config_text(addr, admin, alipay_addr, wechat_addr, hook_addr),
    )
    .unwrap();
    let http = Outbound::new(Duration::from_millis(500), Duration::from_secs(5)).unwrap();
    let gateway = Arc::new(tokio::sync::Mutex::new(Gateway {
        child: None,
        config,
    }));
    gateway.lock().await.spawn();
    wait_healthy(&http, admin).await;

    let client = common::client(&format!("http://{addr}"), "shop_k1", SECRET);
    let done = Arc::new(AtomicUsize::new(0));
    let rng = Arc::new(Mutex::new(Rng(seed)));

    // Faults: every so often, the next call or two to a provider misbehaves.
    let fault_task = {
        let (http, rng, done) = (http.clone(), Arc::clone(&rng), Arc::clone(&done));
        tokio::spawn(async move {
            let modes = [
                "garbage",
                "http_500",
                "bad_signature",
                "drop_after_create",
                "slow",
                "timeout",
            ];
            while done.load(Ordering::SeqCst) < payments {
                let (mode, count, which, wait) = {
                    let mut r = rng.lock().unwrap();
                    (
                        modes[r.below(6) as usize],
                        1 + r.below(2),
                        r.below(2),
                        50 + r.below(250),
                    )
                };
                let target = if which == 0 { alipay_addr } else { wechat_addr };
                control(
                    &http,
                    target,
                    "/sandbox/fault",
                    json!({"mode": mode, "count": count, "delay_ms": 100}),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        })
    };
    // Kills: SIGKILL at random moments, then a restart.
    let kills = Arc::new(AtomicUsize::new(0));
    let kill_task = {
        let (gateway, rng, done, kills) = (
            Arc::clone(&gateway),
            Arc::clone(&rng),
            Arc::clone(&done),
            Arc::clone(&kills),
        );
        // Random moments spread over the run: when this many payments are done.
        let mut moments: Vec<usize> = {
            let mut r = rng.lock().unwrap();
            (0..(payments / PAYMENTS_PER_KILL).max(MIN_KILLS))
                .map(|_| payments / 20 + (r.below(payments as u64 * 9 / 10) as usize))
                .collect()
        };
        moments.sort_unstable();
        tokio::spawn(async move {
            for moment in moments {
                while done.load(Ordering::SeqCst) < moment {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // A little jitter so the kill lands at any point of a request.
                let jitter = rng.lock().unwrap().below(40);
                tokio::time::sleep(Duration::from_millis(jitter)).await;
                let mut g = gateway.lock().await;
                g.kill();
                kills.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                g.spawn();
            }
        })
    };

    // Shoppers and a storefront: create, pay most, refund some.
    let workers = 6;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, http, rng, done) = (
            client.clone(),
            http.clone(),
            Arc::clone(&rng),
            Arc::clone(&done),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < payments {
                let (wallet, pay, refund) = {
                    let mut r = rng.lock().unwrap();
                    (r.below(2), r.below(10) < 7, r.below(10) < 3)
                };
                let method = if wallet == 0 {
                    "alipay_qr"
                } else {
                    "wechat_native"
                };
                let body = json!({
                    "amount": 100 + i, "currency": "CNY", "method": method,
                    "merchant_reference": format!("crash-{i}"), "description": "Soak",
                })
                .to_string();
                let key = format!("crash-{i}");
                let payment = call(&client, HttpMethod::Post, "/v1/payments", &body, &key).await;
                let id = payment["id"].as_str().unwrap_or_default().to_owned();
                let showable = payment["next_action"]["type"] == "display_qr";
                if pay && showable {
                    let sandbox = if wallet == 0 {
                        alipay_addr
                    } else {
                        wechat_addr
                    };
                    control(&http, sandbox, "/sandbox/pay", json!({"out_trade_no": id})).await;
                    if refund {
                        // Wait (through kills) until the ledger has it as paid, then refund part.
                        for _ in 0..100 {
                            let current = call(
                                &client,
                                HttpMethod::Get,
                                &format!("/v1/payments/{id}"),
                                "",
                                "",
                            )
                            .await;
                            if current["status"] == "succeeded" {
                                call(
                                    &client,
                                    HttpMethod::Post,
                                    &format!("/v1/payments/{id}/refunds"),
                                    r#"{"amount":50}"#,
                                    &format!("{key}-refund"),
                                )
                                .await;
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
                i += workers;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    kill_task.await.unwrap();
    fault_task.await.unwrap();
    // One last kill, a clean start, and sweeps until nothing is open.
    {
        let mut g = gateway.lock().await;
        g.kill();
        g.spawn();
    }
    wait_healthy(&http, admin).await;
    let ledger_path = dir.path().join("ledger.db");
    let open = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT (SELECT COUNT(*) FROM payments WHERE status IN ('pending','unknown')) + \
                    (SELECT COUNT(*) FROM refunds WHERE status IN ('pending','unknown'))",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let undelivered = |conn: &rusqlite::Connection| -> i64 {
        conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let mut settled = false;
    for _ in 0..120 {
        control(&http, admin, "/janitor/sweep", json!({})).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let conn = ledger(&ledger_path);
        if open(&conn) == 0 && undelivered(&conn) == 0 {
            settled = true;
            break;
        }
    }
    // Provider notifications still in flight settle too; give them a last moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    control(&http, admin, "/janitor/sweep", json!({})).await;
    for _ in 0..40 {
        if undelivered(&ledger(&ledger_path)) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gateway.lock().await.kill();
    let conn = ledger(&ledger_path);
    assert!(
        settled,
        "payments or refunds still open, or events undelivered, after the sweeps"
    );

    // The ledger.
    let mut ledger_payments: BTreeMap<String, (String, i64, i64)> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT id, status, amount, amount_refunded FROM payments")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (id, status, amount, refunded) = row.unwrap();
        ledger_payments.insert(id, (status, amount, refunded));
    }
    let mut ledger_refunds: BTreeMap<String, (String, String, i64)> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT id, payment_id, status, amount FROM refunds")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (id, payment, status, amount) = row.unwrap();
        ledger_refunds.insert(id, (payment, status, amount));
    }

    // 1. Every order a provider holds as paid is succeeded, with the right amount; every order
    //    has its ledger payment; no payment has orders at two providers.
    let alipay_orders = alipay.orders();
    let wechat_orders = wechat.orders();
    let alipay_ids: BTreeSet<&str> = alipay_orders
        .iter()
        .map(|o| o.out_trade_no.as_str())
        .collect();
    let wechat_ids: BTreeSet<&str> = wechat_orders
        .iter()
        .map(|o| o.out_trade_no.as_str())
        .collect();
    assert!(
        alipay_ids.is_disjoint(&wechat_ids),
        "a payment has orders at two providers"
    );
    let mut paid = 0;
    let mut provider_refunds = 0;
    for order in alipay_orders.iter().chain(wechat_orders.iter()) {
        let (status, amount, refunded) =
            ledger_payments.get(&order.out_trade_no).unwrap_or_else(|| {
                panic!(
                    "provider order {} has no ledger payment",
                    order.out_trade_no
                )
            });
        if order.paid {
            paid += 1;
            assert_eq!(
                status, "succeeded",
                "{} is paid at the provider",
                order.out_trade_no
            );
            assert_eq!(*amount, order.total, "{} amount", order.out_trade_no);
        }
        let provider_refunded: i64 = order.refunds.iter().map(|(_, a)| a).sum();
        assert!(
            provider_refunded <= order.total,
            "the provider refunded more than {} was paid",
            order.out_trade_no
        );
        assert_eq!(
            *refunded, provider_refunded,
            "{} refunded total",
            order.out_trade_no
        );
        for (request_no, amount) in &order.refunds {
            provider_refunds += 1;
            let (payment, status, ledger_amount) = ledger_refunds
                .get(request_no)
                .unwrap_or_else(|| panic!("provider refund {request_no} has no ledger refund"));
            assert_eq!(payment, &order.out_trade_no);
            assert_eq!(status, "succeeded", "{request_no}");
            assert_eq!(ledger_amount, amount, "{request_no}");
        }
    }
    // 2. No refund (pending, unknown or succeeded) exceeds its payment.
    let mut held: BTreeMap<&str, i64> = BTreeMap::new();
    for (payment, status, amount) in ledger_refunds.values() {
        if status != "failed" {
            *held.entry(payment.as_str()).or_default() += amount;
        }
    }
    for (payment, total) in &held {
        assert!(
            *total <= ledger_payments[*payment].1,
            "refunds of {payment} exceed it"
        );
    }
    // 3. Every event reached the merchant at least once, under its one id.
    let mut stmt = conn.prepare("SELECT id FROM events").unwrap();
    let events: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let received = received.lock().unwrap();
    for event in &events {
        assert!(
            received.contains_key(event),
            "event {event} never delivered"
        );
    }
    let duplicates: usize = received.values().map(|n| n.saturating_sub(1)).sum();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT failure FROM payments WHERE status = 'failed'")
        .unwrap();
    for failure in stmt
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
    {
        let code = failure
            .unwrap()
            .and_then(|f| serde_json::from_str::<Value>(&f).ok())
            .and_then(|f| f["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        *failures.entry(code).or_default() += 1;
    }
    println!("crash harness: failed payments by code: {failures:?}");
    let by_status = |s: &str| {
        ledger_payments
            .values()
            .filter(|(status, ..)| status == s)
            .count()
    };
    println!(
        "crash harness: {} payments ({} succeeded, {} requires_action, {} failed, {} canceled), {} paid at providers, \
         {} refunds ({} at providers), {} kills, {} events delivered ({} duplicate deliveries)",
        ledger_payments.len(),
        by_status("succeeded"),
        by_status("requires_action"),
        by_status("failed"),
        by_status("canceled"),
        paid,
        ledger_refunds.len(),
        provider_refunds,
        kills.load(Ordering::SeqCst) + 1,
        events.len(),
        duplicates,
    );
    assert_eq!(
        ledger_payments.len(),
        payments,
        "one ledger payment per created payment"
    );
}
