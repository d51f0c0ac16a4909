//! Throughput of the parts of a checkout: `cargo bench --bench checkout`.
//!
//! Prints per-operation costs of the Alipay adapter's pure work (RSA-2048 signing is the floor:
//! ~0.6 ms on the 2-core reference machine) and of whole `POST /v1/payments` calls through the
//! gateway against the local sandbox (which itself verifies and signs: two more RSA operations).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::float_arithmetic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_contract::crypto::RsaSigner;
use moongate_contract::{
    CallContext, CreatePayment, Currency, Money, PaymentAdapter, PaymentMethod,
};

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn report(name: &str, iterations: u32, elapsed: Duration) {
    let per = elapsed / iterations;
    // Integer arithmetic only (house lint): operations per second from microseconds.
    let micros = elapsed.as_micros().max(1);
    let per_sec = u128::from(iterations) * 1_000_000 / micros;
    println!("{name:<44} {per:>10.1?} / op   {per_sec:>9} ops/s   ({iterations} ops)");
}

fn main() {
    let key = fixture("keys/nodejs-sdk-app-private-key.pem");
    let signer = RsaSigner::from_pem(&key).unwrap();
    let n = 500;
    let start = Instant::now();
    for i in 0..n {
        signer
            .sign_base64(format!("message {i}").as_bytes())
            .unwrap();
    }
    let rsa = start.elapsed() / n;
    report("RSA-2048 SHA256withRSA sign (floor)", n, start.elapsed());

    let adapter = AlipayAdapter::new(&AccountKeys {
        consent_url: None,
        app_id: "2021000122671080",
        gateway_url: "http://127.0.0.1:1/gateway.do",
        seller_id: None,
        app_private_key: &key,
        alipay: AlipayKeys::PublicKey(&fixture("keys/sandbox-alipay-public-key.pem")),
    })
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cx = CallContext {
        now,
        nonce: "n".repeat(32),
    };
    let start = Instant::now();
    for i in 0..n {
        let req = CreatePayment {
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            provider_order_id: format!("pay_{i}"),
            amount: Money::new(8888, Currency::CNY),
            method: PaymentMethod::AlipayQr,
            subject: "Tea".into(),
            description: None,
            return_url: None,
            notify_url: "https://gw.example/notify/alipay/m/a".into(),
            expires_at: now + time::Duration::hours(2),
            payer: Default::default(),
        };
        adapter.prepare_create(&cx, &req).unwrap();
    }
    report("alipay prepare_create (render + sign)", n, start.elapsed());

    let wechat = moongate_adapter_wechatpay::WechatPayAdapter::new(
        &moongate_adapter_wechatpay::AccountKeys {
            mchid: "1230000109",
            appid: "wxd678efh567hg6787",
            merchant_serial_no: "F5765756002FDD77",
            merchant_private_key: &fixture("keys/wechatpay-go-merchant-private-key.pem"),
            apiv3_key: "0123456789abcdef0123456789abcdef",
            api_v2_key: None,
            wechatpay_public_key: Some((
                "PUB_KEY_ID_0112300001092026112200000000000001",
                &fixture("keys/sandbox-wechatpay-public-key.pem"),
            )),
            platform_certificates: &[],
            api_base_url: "http://127.0.0.1:1",
            oauth: None,
        },
    )
    .unwrap();
    let start = Instant::now();
    for i in 0..n {
        let req = CreatePayment {
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            provider_order_id: format!("pay_{i:08}"),
            amount: Money::new(8888, Currency::CNY),
            method: PaymentMethod::WechatNative,
            subject: "Tea".into(),
            description: None,
            return_url: None,
            notify_url: "https://gw.example/notify/wechatpay/m/a".into(),
            expires_at: now + time::Duration::hours(2),
            payer: Default::default(),
        };
        wechat.prepare_create(&cx, &req).unwrap();
    }
    report(
        "wechatpay prepare_create (render + sign)",
        n,
        start.elapsed(),
    );

    // A signed, encrypted notification: verify (RSA) + AES-256-GCM decrypt + decode.
    let platform = RsaSigner::from_pem(&fixture("keys/sandbox-wechatpay-private-key.pem")).unwrap();
    let plain = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"pay_00000001","transaction_id":"4200000000000000000000000001","trade_type":"NATIVE","trade_state":"SUCCESS","success_time":"2024-05-13T17:49:20+08:00","amount":{"total":8888,"payer_total":8888,"currency":"CNY","payer_currency":"CNY"}}"#;
    let ciphertext = moongate_adapter_wechatpay::aead::encrypt(
        b"0123456789abcdef0123456789abcdef",
        "fdasflkja484",
        "transaction",
        plain.as_bytes(),
    )
    .unwrap();
    let body = format!(
        r#"{{"id":"EV-1","create_time":"2024-05-13T17:49:21+08:00","resource_type":"encrypt-resource","event_type":"TRANSACTION.SUCCESS","summary":"s","resource":{{"original_type":"transaction","algorithm":"AEAD_AES_256_GCM","ciphertext":"{ciphertext}","associated_data":"transaction","nonce":"fdasflkja484"}}}}"#
    );
    let ts = now.unix_timestamp().to_string();
    let signature = platform
        .sign_base64(&moongate_adapter_wechatpay::sign::response_message(
            &ts,
            "nonce",
            body.as_bytes(),
        ))
        .unwrap();
    let headers: Vec<(String, String)> = vec![
        ("wechatpay-timestamp".into(), ts),
        ("wechatpay-nonce".into(), "nonce".into()),
        (
            "wechatpay-serial".into(),
            "PUB_KEY_ID_0112300001092026112200000000000001".into(),
        ),
        ("wechatpay-signature".into(), signature),
    ];
    let start = Instant::now();
    for _ in 0..n {
        wechat
            .parse_notification(&moongate_contract::RawNotification {
                headers: &headers,
                body: body.as_bytes(),
                received_at: now,
            })
            .unwrap();
    }
    report(
        "wechatpay parse_notification (verify+AEAD)",
        n,
        start.elapsed(),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `MOONGATE_BENCH_LEDGER=sqlite` or `postgresql`: that ledger's gateway rounds alone (an
    // A/B of one ledger's path in less time); by default everything on both.
    let only = std::env::var("MOONGATE_BENCH_LEDGER").unwrap_or_default();
    if only.is_empty() {
        runtime.block_on(end_to_end(None, rsa));
    }
    if only.is_empty() || only == "sqlite" {
        runtime.block_on(gateway_process(None, &signer));
    }
    // The same calls on a PostgreSQL ledger (a fresh schema), when a server is named.
    match std::env::var("MOONGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() && only != "sqlite" => runtime.block_on(async {
            if only.is_empty() {
                let schema = Schema::create(&url).await;
                end_to_end(Some(&schema.url), rsa).await;
                schema.drop().await;
            }
            gateway_process(Some(&url), &signer).await;
        }),
        _ => println!("PostgreSQL ledger: skipped (set MOONGATE_TEST_DATABASE_URL)"),
    }
}

/// CPU time (user + system) the PostgreSQL server's processes on this machine have used so
/// far (every process named `postgres`: the backends serving the gateway, the WAL writer,
/// the checkpointer); zero where there are none.
fn postgres_cpu(tick: Duration) -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut total = Duration::ZERO;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() == "postgres" {
            total += try_process_cpu(pid, tick).unwrap_or_default();
        }
    }
    total
}

/// A fresh PostgreSQL schema for one ledger, and the URL that selects it.
struct Schema {
    url: String,
    name: String,
    admin: sqlx::PgPool,
}

impl Schema {
    async fn create(url: &str) -> Schema {
        let admin = sqlx::PgPool::connect(url).await.unwrap();
        let name = moongate::ledger::new_id("bench").to_lowercase();
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&admin)
            .await
            .unwrap();
        let joiner = if url.contains('?') { '&' } else { '?' };
        Schema {
            url: format!("{url}{joiner}options[search_path]={name}"),
            name,
            admin,
        }
    }

    async fn drop(self) {
        sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.name))
            .execute(&self.admin)
            .await
            .unwrap();
    }
}

/// The strict Alipay sandbox on a loopback port, knowing the bench's app.
async fn start_sandbox() -> std::net::SocketAddr {
    use moongate_testkit::sandbox::{self, SandboxSettings};
    let keys = |p: &str| fixture(&format!("keys/{p}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    sandbox::start_on(
        SandboxSettings {
            private_key_pem: keys("sandbox-alipay-private-key.pem"),
            apps: vec![(
                "2021000122671080".into(),
                keys("nodejs-sdk-app-public-key.pem"),
            )],
            time_divisor: 1000,
            seller_id: "2088102177846875".into(),
            certificate_mode: None,
            authorisations: vec![],
            callback_domains: vec![],
        },
        listener,
    )
    .await
    .unwrap();
    addr
}

/// The bench gateway's config listening on `addr` (one merchant, one Alipay account at the
/// sandbox), its secret files written into `dir`; a PostgreSQL ledger at `database_url`.
fn bench_config(
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    sandbox_addr: std::net::SocketAddr,
    database_url: Option<&str>,
) -> String {
    std::fs::write(dir.join("k.secret"), "bench-signing-secret-0123456789").unwrap();
    let fixtures = format!("{}/fixtures/keys", env!("CARGO_MANIFEST_DIR"));
    let ledger_section = match database_url {
        Some(url) => {
            std::fs::write(dir.join("db.url"), url).unwrap();
            std::fs::write(dir.join("cashier.key"), "k".repeat(32)).unwrap();
            "cashier_key = { file = \"cashier.key\" }\n[ledger]\ndatabase_url = { file = \"db.url\" }\n"
        }
        None => "",
    };
    format!(
        r#"[server]
listen = "{addr}"
public_base_url = "http://{addr}"
{ledger_section}
[merchants.m]
name = "M"
keys = [{{ id = "m_k1", secret = {{ file = "k.secret" }} }}]
rate_limit = {{ requests_per_second = 100000, burst = 100000 }}
[merchants.m.accounts.a]
provider = "alipay"
settings = {{ app_id = "2021000122671080", app_private_key = {{ file = "{fixtures}/nodejs-sdk-app-private-key.pem" }}, alipay_public_key = {{ file = "{fixtures}/sandbox-alipay-public-key.pem" }}, gateway_url = "http://{sandbox_addr}/gateway.do" }}
"#
    )
}

/// The create request every end-to-end call sends (each under its own idempotency key).
const CREATE: &[u8] = br#"{"amount":8888,"currency":"CNY","method":"alipay_qr","merchant_reference":"o","description":"Tea"}"#;

/// A gateway from `config_text` on `listener` (on `store` when given), and the bench
/// merchant's client for it.
async fn gateway(
    config_text: &str,
    dir: &std::path::Path,
    listener: tokio::net::TcpListener,
    store: Option<std::sync::Arc<dyn moongate::store::Store>>,
) -> (
    moongate::server::Running,
    moongate_testkit::client::MerchantClient,
) {
    let addr = listener.local_addr().unwrap();
    let config = moongate::config::parse(config_text)
        .unwrap()
        .build(dir)
        .unwrap();
    let store = match store {
        Some(store) => store,
        None => moongate::server::open_store(&config).await.unwrap(),
    };
    let running = moongate::server::start_on(config, store, listener)
        .await
        .unwrap();
    let client = moongate_testkit::client::MerchantClient::new(
        &format!("http://{addr}"),
        "m_k1",
        b"bench-signing-secret-0123456789",
    )
    .unwrap();
    (running, client)
}

/// `n` create calls from `workers` concurrent workers, spread over `clients` (one per gateway).
async fn hammer(
    clients: &[moongate_testkit::client::MerchantClient],
    n: u32,
    workers: usize,
    tag: &str,
) {
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let client = clients.iter().cycle().nth(worker).unwrap().clone();
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / workers as u32 {
                let key = format!("bench-{tag}{worker}-{i}");
                let response = client
                    .call(
                        moongate_contract::HttpMethod::Post,
                        "/v1/payments",
                        CREATE,
                        Some(&key),
                    )
                    .await
                    .unwrap();
                assert_eq!(response.status, 201);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The median and 99th percentile of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: usize| samples[(samples.len() * q / 100).min(samples.len() - 1)];
    (at(50), at(99))
}

/// A bare fsync in `dir`: 100 bytes appended and `sync_data`, `n` times.
fn bare_fsync(dir: &std::path::Path, n: usize) -> (Duration, Duration) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("fsync.probe"))
        .unwrap();
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        file.write_all(&[b'x'; 100]).unwrap();
        file.sync_data().unwrap();
        samples.push(start.elapsed());
    }
    percentiles(&mut samples)
}

async fn end_to_end(database_url: Option<&str>, rsa: Duration) {
    let ledger = if database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let sandbox_addr = start_sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config_text = bench_config(dir.path(), addr, sandbox_addr, database_url);
    // SQLite: the store is opened here so its write counters can be read.
    let sqlite = match database_url {
        None => Some(std::sync::Arc::new(
            moongate::store::sqlite::SqliteStore::open(&dir.path().join("moongate.db")).unwrap(),
        )),
        Some(_) => None,
    };
    let store = sqlite
        .clone()
        .map(|s| s as std::sync::Arc<dyn moongate::store::Store>);
    let stats = || sqlite.as_ref().map(|s| s.write_stats());
    let (_running, client) = gateway(&config_text, dir.path(), listener, store).await;
    let n = 300;
    let before = stats();
    let mut samples = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let key = format!("bench-{i}");
        let one = Instant::now();
        let response = client
            .call(
                moongate_contract::HttpMethod::Post,
                "/v1/payments",
                CREATE,
                Some(&key),
            )
            .await
            .unwrap();
        samples.push(one.elapsed());
        assert_eq!(response.status, 201);
    }
    let elapsed = start.elapsed();
    report(
        &format!("POST /v1/payments, sequential, {ledger}"),
        n,
        elapsed,
    );
    let (p50, p99) = percentiles(&mut samples);
    println!(
        "  = {:.2} RSA signatures per create (this run's signature: {rsa:.1?}); latency p50 {p50:.1?}, p99 {p99:.1?}",
        (elapsed / n).as_secs_f64() / rsa.as_secs_f64()
    );
    let per_create = |before: Option<moongate::store::sqlite::WriteStats>, creates: u32| {
        if let (Some(b), Some(a)) = (before, stats()) {
            println!(
                "  ledger writes per create {:.2}, commits (fsyncs of the WAL) per create {:.2}",
                (a.jobs - b.jobs) as f64 / f64::from(creates),
                (a.commits - b.commits) as f64 / f64::from(creates)
            );
        }
    };
    per_create(before, n);
    if database_url.is_none() {
        let (p50, p99) = bare_fsync(dir.path(), 300);
        println!(
            "bare fsync (100 B append + fdatasync) in the ledger's folder: p50 {p50:.1?}, p99 {p99:.1?}"
        );
    }

    for workers in [8_usize, 64] {
        let before = stats();
        let start = Instant::now();
        hammer(
            std::slice::from_ref(&client),
            n,
            workers,
            &format!("c{workers}-"),
        )
        .await;
        let done = (n / workers as u32) * workers as u32;
        let elapsed = start.elapsed();
        report(
            &format!("POST /v1/payments, {workers} concurrent, {ledger}"),
            done,
            elapsed,
        );
        println!(
            "  = {:.2} RSA signatures of wall time per create",
            (elapsed / done).as_secs_f64() / rsa.as_secs_f64()
        );
        per_create(before, done);
    }
    if database_url.is_some() {
        // A second gateway on the same PostgreSQL ledger, clients spread over both.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let text = config_text.replace(
            &addr.to_string(),
            &listener.local_addr().unwrap().to_string(),
        );
        let (_second, other) = gateway(&text, dir.path(), listener, None).await;
        let start = Instant::now();
        hammer(&[client.clone(), other], n, 8, "two").await;
        report(
            "POST /v1/payments, 8 concurrent, 2 gateways, PostgreSQL",
            (n / 8) * 8,
            start.elapsed(),
        );
        return;
    }

    // The shared (Redis) merchant limit check every request pays when `[rate_limits]` is set.
    if let Ok(url) = std::env::var("MOONGATE_TEST_REDIS_URL") {
        let limiter = moongate::shared_limits::SharedLimiter::new(
            &url,
            Duration::from_millis(200),
            &moongate::ledger::new_id("bench"),
        )
        .unwrap();
        let n = 5_000;
        let start = Instant::now();
        for _ in 0..n {
            let decision = limiter.check("merchant:bench", 1_000_000, 1_000_000).await;
            assert_eq!(decision, moongate::shared_limits::SharedDecision::Allowed);
        }
        report("shared limit check (Redis GCRA script)", n, start.elapsed());
    } else {
        println!("shared limit check: skipped (set MOONGATE_TEST_REDIS_URL)");
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn process_cpu(pid: u32, tick: Duration) -> Duration {
    try_process_cpu(pid, tick).expect("the gateway's /proc entry")
}

/// [`process_cpu`], or `None` when the process is gone or its entry unreadable.
fn try_process_cpu(pid: u32, tick: Duration) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the first, utime the
    // 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let ticks = fields.get(10)? + fields.get(11)?;
    Some(tick * u32::try_from(ticks).ok()?)
}

/// One RSA-2048 signature, timed now (median of 5 × 40).
fn rsa_now(signer: &RsaSigner) -> Duration {
    let mut rounds: Vec<Duration> = (0..5)
        .map(|r| {
            let start = Instant::now();
            for i in 0..40 {
                signer.sign_base64(format!("m {r} {i}").as_bytes()).unwrap();
            }
            start.elapsed() / 40
        })
        .collect();
    percentiles(&mut rounds).0
}

/// `count` calls started at `rate` per second whatever the earlier ones do (open loop); each
/// call's latency counts from its scheduled start.
async fn open_loop<F, Fut>(rate: f64, count: usize, call: F) -> (Duration, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval * u32::try_from(i).unwrap();
        tokio::time::sleep_until(due).await;
        let fut = call(i);
        tasks.push(tokio::spawn(async move {
            fut.await;
            tokio::time::Instant::now() - due
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for task in tasks {
        samples.push(task.await.unwrap());
    }
    percentiles(&mut samples)
}

fn median_min_max(values: &mut [f64]) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "{:.2} ({:.2}–{:.2})",
        values[values.len() / 2],
        values[0],
        values[values.len() - 1]
    )
}

/// `moongate serve` in its own process (the release binary), so its CPU is its own: per create
/// against one RSA-2048 signature timed in the same round, throughput, and the latency it adds
/// at half of that peak, open loop, beside the sandbox's own at the same rate.
async fn gateway_process(database_url: Option<&str>, signer: &RsaSigner) {
    let ledger = if database_url.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let tick = {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        let hz: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        Duration::from_secs(1) / u32::try_from(hz).unwrap()
    };
    let keys = |p: &str| fixture(&format!("keys/{p}"));
    let sandbox_addr = start_sandbox().await;
    let rounds = std::env::var("MOONGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_usize);
    let creates: u32 = std::env::var("MOONGATE_BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500);
    // `MOONGATE_BENCH_BINARIES=a,b`: the rounds alternate between those builds of moongate
    // (an A/B comparison in one run, on the same noisy machine); by default this build's.
    let binaries: Vec<String> = match std::env::var("MOONGATE_BENCH_BINARIES") {
        Ok(list) if !list.is_empty() => list.split(',').map(str::to_owned).collect(),
        _ => vec![env!("CARGO_BIN_EXE_moongate").to_owned()],
    };
    let mut tallies: Vec<Tally> = binaries.iter().map(|_| Tally::default()).collect();
    for turn in 0..rounds * binaries.len() {
        let (round, which) = (turn / binaries.len(), turn % binaries.len());
        // Each round runs the builds in an order of its own (ABBA…), so a drift of the machine
        // favours none.
        let which = if round % 2 == 0 {
            which
        } else {
            binaries.len() - 1 - which
        };
        let Tally {
            ratios,
            servers,
            peaks,
            p50s,
            p99s,
            added50,
            added99,
        } = &mut tallies[which];
        let round = ratios.len();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let schema = match database_url {
            Some(url) => Some(Schema::create(url).await),
            None => None,
        };
        let config = bench_config(
            dir.path(),
            port,
            sandbox_addr,
            schema.as_ref().map(|s| s.url.as_str()),
        );
        let config_path = dir.path().join("moongate.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = std::process::Command::new(&binaries[which])
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let client = moongate_testkit::client::MerchantClient::new(
            &format!("http://{port}"),
            "m_k1",
            b"bench-signing-secret-0123456789",
        )
        .unwrap();
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(port).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        hammer(std::slice::from_ref(&client), 96, 8, &format!("w{round}-")).await;
        // The signature is timed just before and just after the creates (the machine's speed
        // drifts), and the mean is their floor.
        let rsa_before = rsa_now(signer);
        let cpu_before = process_cpu(child.id(), tick);
        let server_before = postgres_cpu(tick);
        let start = Instant::now();
        hammer(
            std::slice::from_ref(&client),
            creates,
            8,
            &format!("r{round}-"),
        )
        .await;
        let wall = start.elapsed();
        let cpu = process_cpu(child.id(), tick) - cpu_before;
        let server = postgres_cpu(tick).saturating_sub(server_before);
        let rsa = (rsa_before + rsa_now(signer)) / 2;
        let done = (creates / 8) * 8;
        let per_create = cpu / done;
        ratios.push(per_create.as_secs_f64() / rsa.as_secs_f64());
        if database_url.is_some() {
            servers.push((server / done).as_secs_f64() / rsa.as_secs_f64());
        }
        let peak = f64::from(done) / wall.as_secs_f64();
        peaks.push(peak);

        // Half of that peak, open loop: the gateway, then the sandbox alone (requests signed
        // beforehand, so only the call is timed) at the same rate.
        let rate = peak / 2.0;
        let count = (rate * 4.0) as usize;
        let (g50, g99) = open_loop(rate, count, |i| {
            let client = client.clone();
            let key = format!("o{round}-{i}");
            async move {
                let response = client
                    .call(
                        moongate_contract::HttpMethod::Post,
                        "/v1/payments",
                        CREATE,
                        Some(&key),
                    )
                    .await
                    .unwrap();
                assert_eq!(response.status, 201);
            }
        })
        .await;
        let adapter = std::sync::Arc::new(
            AlipayAdapter::new(&AccountKeys {
                consent_url: None,
                app_id: "2021000122671080",
                gateway_url: &format!("http://{sandbox_addr}/gateway.do"),
                seller_id: None,
                app_private_key: &keys("nodejs-sdk-app-private-key.pem"),
                alipay: AlipayKeys::PublicKey(&keys("sandbox-alipay-public-key.pem")),
            })
            .unwrap(),
        );
        let now = time::OffsetDateTime::now_utc();
        let cx = CallContext {
            now,
            nonce: "n".repeat(32),
        };
        let requests: Vec<_> = (0..count)
            .map(|i| {
                let req = CreatePayment {
                    created_at: time::OffsetDateTime::UNIX_EPOCH,
                    provider_order_id: format!("direct{turn}x{i}"),
                    amount: Money::new(8888, Currency::CNY),
                    method: PaymentMethod::AlipayQr,
                    subject: "Tea".into(),
                    description: None,
                    return_url: None,
                    notify_url: "http://127.0.0.1:9/notify".into(),
                    expires_at: now + time::Duration::hours(2),
                    payer: Default::default(),
                };
                match adapter.prepare_create(&cx, &req).unwrap() {
                    moongate_contract::Prepared::Send(http) => http,
                    moongate_contract::Prepared::Ready(_) => unreachable!("alipay_qr is a call"),
                }
            })
            .collect();
        let requests = std::sync::Arc::new(requests);
        let outbound =
            moongate::outbound::Outbound::new(Duration::from_secs(3), Duration::from_secs(15))
                .unwrap();
        let (s50, s99) = open_loop(rate, count, |i| {
            let (outbound, requests) = (outbound.clone(), std::sync::Arc::clone(&requests));
            async move {
                let response = outbound.send(&requests[i]).await.unwrap();
                assert_eq!(response.status, 200);
            }
        })
        .await;
        p50s.push(g50.as_secs_f64() * 1e3);
        p99s.push(g99.as_secs_f64() * 1e3);
        added50.push((g50.as_secs_f64() - s50.as_secs_f64()) * 1e3);
        added99.push((g99.as_secs_f64() - s99.as_secs_f64()) * 1e3);
        let build = if binaries.len() > 1 {
            format!(" [{}]", binaries[which])
        } else {
            String::new()
        };
        println!(
            "  round {round}{build}: CPU {per_create:.2?} per create = {:.2} signatures \
             ({rsa:.2?}); peak {peak:.0}/s; at {rate:.0}/s open loop p50 {g50:.1?} p99 {g99:.1?} \
             (the sandbox alone: p50 {s50:.1?} p99 {s99:.1?}){}",
            ratios[round],
            servers
                .last()
                .map(|r| format!("; PostgreSQL server {r:.2} signatures per create"))
                .unwrap_or_default()
        );
        let _ = child.kill();
        let _ = child.wait();
        if let Some(schema) = schema {
            schema.drop().await;
        }
    }
    for (binary, tally) in binaries.iter().zip(&mut tallies) {
        let build = if binaries.len() > 1 {
            format!(" [{binary}]")
        } else {
            String::new()
        };
        if !tally.servers.is_empty() {
            println!(
                "PostgreSQL server{build}: CPU per create = {} RSA-2048 signatures",
                median_min_max(&mut tally.servers)
            );
        }
        println!(
            "moongate serve ({ledger}){build}, its own process, {rounds} rounds of {creates} \
             creates from 8 clients: gateway CPU per create = {} RSA-2048 signatures; peak {} \
             creates/s; at half of it, open loop: p50 {} ms, p99 {} ms; added over the provider \
             call: p50 {} ms, p99 {} ms",
            median_min_max(&mut tally.ratios),
            median_min_max(&mut tally.peaks),
            median_min_max(&mut tally.p50s),
            median_min_max(&mut tally.p99s),
            median_min_max(&mut tally.added50),
            median_min_max(&mut tally.added99),
        );
    }
}

/// One build's rounds in [`gateway_process`].
#[derive(Default)]
struct Tally {
    ratios: Vec<f64>,
    /// PostgreSQL server CPU per create ÷ one signature (PostgreSQL rounds only).
    servers: Vec<f64>,
    peaks: Vec<f64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    added50: Vec<f64>,
    added99: Vec<f64>,
}
