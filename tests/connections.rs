//! Slow clients and many clients (issue 25, finding 3): a body that trickles is cut off after
//! `server.body_read_timeout_ms`, and no more than `server.max_connections` connections are
//! served at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A gateway with the limits these tests need.
async fn start(dir: &std::path::Path) -> (moongate::server::Running, SocketAddr) {
    start_with(
        dir,
        "header_read_timeout_ms = 20000\nbody_read_timeout_ms = 400\nmax_connections = 2\n",
        None,
    )
    .await
}

/// A gateway with one Alipay merchant, `server` lines added to `[server]`, on `store` when
/// given (else the config's SQLite ledger in `dir`).
async fn start_with(
    dir: &std::path::Path,
    server: &str,
    store: Option<std::sync::Arc<dyn moongate::store::Store>>,
) -> (moongate::server::Running, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let f = fixtures();
    let text = format!(
        r#"[server]
listen = "{addr}"
public_base_url = "http://{addr}"
{server}
[ledger]
path = "ledger.db"

[merchants.shop]
name = "Shop"
keys = [{{ id = "shop_k1", secret = {{ file = "{secret}" }} }}]

[merchants.shop.accounts.main]
provider = "alipay"
settings = {{ app_id = "2021000122671080", app_private_key = {{ file = "{app}" }}, alipay_public_key = {{ file = "{pubkey}" }} }}
"#,
        secret = f.join("demo/shop-key.secret").display(),
        app = f.join("keys/nodejs-sdk-app-private-key.pem").display(),
        pubkey = f.join("keys/sandbox-alipay-public-key.pem").display(),
    );
    let config = moongate::config::parse(&text).unwrap().build(dir).unwrap();
    let store = match store {
        Some(store) => store,
        None => moongate::server::open_store(&config).await.unwrap(),
    };
    let running = moongate::server::start_on(config, store, listener)
        .await
        .unwrap();
    (running, addr)
}

/// The shop's signed API client for the gateway at `addr`.
fn shop_client(addr: SocketAddr) -> moongate_testkit::client::MerchantClient {
    let secret = std::fs::read_to_string(fixtures().join("demo/shop-key.secret")).unwrap();
    moongate_testkit::client::MerchantClient::new(
        &format!("http://{addr}"),
        "shop_k1",
        secret.trim().as_bytes(),
    )
    .unwrap()
}

/// An unsigned GET (the public and admin probes).
async fn plain_get(
    client: &moongate_testkit::client::MerchantClient,
    url: String,
) -> moongate_contract::HttpResponse {
    client
        .send(&moongate_contract::HttpRequest {
            method: moongate_contract::HttpMethod::Get,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        })
        .await
        .unwrap()
}

/// Reads until the peer closes, or `within` passes (then returns what came).
async fn read_for(stream: &mut TcpStream, within: Duration) -> String {
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut buffer)).await;
    String::from_utf8_lossy(&buffer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = start(dir.path()).await;
    // Seen in review: headers to a notify URL, then one body byte at a time.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /notify/alipay/shop/main HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
        )
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        // 20 s of trickling, far beyond the 400 ms allowed.
        for _ in 0..200 {
            if writer.write_all(b"a").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut buffer)).await;
    let response = String::from_utf8_lossy(&buffer);
    assert!(
        read.is_ok(),
        "the connection was still open after 10 s: {response}"
    );
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains(r#""code":"body_timeout""#), "{response}");
    trickle.abort();
    // A body over the limit is refused by its declared length, in the one error shape.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .unwrap();
    let response = read_for(&mut stream, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response.contains(r#""code":"body_too_large""#),
        "{response}"
    );
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_one() {
    let dir = tempfile::tempdir().unwrap();
    let (running, addr) = start(dir.path()).await;
    // Two connections that hold their slot (headers never finished; the header timeout is
    // 20 s here).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A third is queued, not served, while both are open.
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let early = read_for(&mut third, Duration::from_millis(500)).await;
    assert_eq!(early, "", "served beyond max_connections = 2");
    // One closes: the third is served.
    drop(held.pop());
    let response = read_for(&mut third, Duration::from_secs(10)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");
    running.stop();
}

// Issue 18: readiness tells whether the ledger can commit, and while it cannot the API answers
// 503 ledger_unavailable with Retry-After, never 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_503_follow_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = std::sync::Arc::new(
        moongate::store::sqlite::SqliteStore::open(&dir.path().join("ledger.db")).unwrap(),
    );
    let (running, addr) = start_with(
        dir.path(),
        "admin_listen = \"127.0.0.1:0\"\n",
        Some(ledger.clone()),
    )
    .await;
    let admin = running.admin_addr.unwrap();
    let client = shop_client(addr);
    let get = |path: &'static str| plain_get(&client, format!("{}{path}", client.base_url));
    assert_eq!(get("/readyz").await.status, 200);
    // The disk is full: every commit fails.
    ledger.fail_commits(true);
    let not_ready = get("/readyz").await;
    assert_eq!(not_ready.status, 503);
    assert!(String::from_utf8_lossy(&not_ready.body).contains("not_ready"));
    // The admin listener says why.
    let reasons = plain_get(&client, format!("http://{admin}/readyz")).await;
    assert_eq!(reasons.status, 503);
    let text = String::from_utf8_lossy(&reasons.body);
    assert!(text.contains("cannot commit"), "{text}");
    assert!(
        text.contains(r#""shared_limits":"not configured""#),
        "{text}"
    );
    // Liveness is another question: the process runs.
    assert_eq!(get("/healthz").await.status, 200);
    // Reads are still served (from the last commit; a request's nonce is written ahead of what
    // it guards, and a read guards nothing).
    let read = client
        .call(
            moongate_contract::HttpMethod::Get,
            "/v1/payments",
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(read.status, 200);
    // A request that must write: 503 with Retry-After, in the error shape; nothing is kept.
    let create = br#"{"amount":100,"currency":"CNY","method":"alipay_qr","merchant_reference":"o","description":"Tea"}"#;
    let response = client
        .call(
            moongate_contract::HttpMethod::Post,
            "/v1/payments",
            create,
            Some("full-1"),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&response.body);
    assert_eq!(response.status, 503, "{text}");
    assert!(text.contains(r#""code":"ledger_unavailable""#), "{text}");
    assert!(response.header("retry-after").is_some());
    // The disk has room again: ready, and nothing of the refused create was kept.
    ledger.fail_commits(false);
    assert_eq!(get("/readyz").await.status, 200);
    let response = client
        .call(
            moongate_contract::HttpMethod::Get,
            "/v1/payments",
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(String::from_utf8_lossy(&response.body).contains(r#""data":[]"#));
    running.stop();
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (with the reason printed) where this process may not mount (not root, a
    /// container without the capability).
    fn mount(size: &str) -> Option<SmallDisk> {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk {
                path,
                _parent: parent,
            }),
            Ok(out) => {
                eprintln!(
                    "a_full_disk_makes_the_gateway_unready: SKIPPED (cannot mount a tmpfs: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(error) => {
                eprintln!("a_full_disk_makes_the_gateway_unready: SKIPPED (no mount: {error})");
                None
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

// Issue 18: a real full disk, not an injected fault: the ledger on a 4 MiB tmpfs, filled up.
// Readiness fails, writes answer 503 ledger_unavailable (never 500), and once space is freed
// the gateway is ready again and writes go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_makes_the_gateway_unready() {
    let Some(disk) = SmallDisk::mount("4m") else {
        return;
    };
    let (running, addr) = start_with(&disk.path, "", None).await;
    let client = shop_client(addr);
    let ready = || async {
        plain_get(&client, format!("{}/readyz", client.base_url))
            .await
            .status
    };
    assert_eq!(ready().await, 200);
    // Fill the disk.
    let filler = disk.path.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0_u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
    // Writes answer 503 in the error shape, never 500 (one may still fit in a page SQLite
    // had free: try a few). A checkout is a write that calls no provider.
    let create = |key: String| {
        let client = client.clone();
        async move {
            let body = br#"{"amount":100,"currency":"CNY","merchant_reference":"o","description":"Tea","return_url":"https://shop.example/done"}"#;
            client
                .call(
                    moongate_contract::HttpMethod::Post,
                    "/v1/checkouts",
                    body,
                    Some(&key),
                )
                .await
                .unwrap()
        }
    };
    let mut refused = None;
    for i in 0..20 {
        let response = create(format!("full-{i}")).await;
        assert_ne!(
            response.status,
            500,
            "{}",
            String::from_utf8_lossy(&response.body)
        );
        if response.status == 503 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a full disk never refused a write");
    let text = String::from_utf8_lossy(&refused.body);
    assert!(text.contains(r#""code":"ledger_unavailable""#), "{text}");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(ready().await, 503, "ready on a full disk");
    // Room again: ready, and a create goes through.
    std::fs::remove_file(&filler).unwrap();
    let mut back = false;
    for _ in 0..50 {
        if ready().await == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "not ready again once the disk had room");
    let created = create("after".to_owned()).await;
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    running.stop();
    drop(disk);
}
