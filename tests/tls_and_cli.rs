//! HTTPS serving with rustls, and the `check-config` command.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn config_text(listen: &str, tls: bool) -> String {
    let f = fixtures();
    let tls = if tls {
        format!(
            "tls = {{ cert_file = \"{}\", key_file = \"{}\" }}\n",
            f.join("tls/server.pem").display(),
            f.join("tls/server-key.pem").display()
        )
    } else {
        String::new()
    };
    format!(
        r#"[server]
listen = "{listen}"
public_base_url = "https://{listen}"
{tls}
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
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let raw = moongate::config::parse(&config_text(&addr.to_string(), true)).unwrap();
    let config = raw.build(dir.path()).unwrap();
    let store = moongate::server::open_store(&config).await.unwrap();
    let running = moongate::server::start_on(config, store, listener)
        .await
        .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixtures().join("tls/ca.pem")).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap_or_default();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("ok"), "{response}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        plain.read_to_end(&mut buffer),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buffer).starts_with("HTTP/1.1 200"));
    running.stop();
}

#[test]
fn check_config_accepts_the_demo_and_lists_every_problem() {
    let bin = env!("CARGO_BIN_EXE_moongate");
    let ok = Command::new(bin)
        .arg("check-config")
        .arg(fixtures().join("demo/moongate.toml"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ok.stdout)
            .contains("ok (3 merchant(s), 7 account(s), 2 partner(s))")
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = config_text("nowhere", false)
        .replace("2021000122671080", "not-digits")
        .replace("[ledger]", "[webhooks]\nmax_attempts = 0\n\n[ledger]");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.listen",
        "webhooks.max_attempts",
        "merchants.shop.accounts.main.settings.app_id",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
    // A secret's value never shows up, only where it comes from.
    let secret = std::fs::read_to_string(fixtures().join("demo/shop-key.secret")).unwrap();
    assert!(!stderr.contains(secret.trim()));
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_sandbox_command_serves_every_provider_where_asked_and_says_what_clients_need() {
    use std::io::BufRead;
    let (alipay, wechat) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_moongate"))
        .args(["sandbox", "--fixtures"])
        .arg(fixtures())
        .args(["--alipay", &format!("127.0.0.1:{alipay}")])
        .args(["--wechatpay", &format!("127.0.0.1:{wechat}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let printed: Vec<String> = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|line| !line.contains("shopper") || !line.contains(&wechat.to_string()))
        .collect();
    let printed = printed.join("\n");
    for needed in [
        format!("http://127.0.0.1:{alipay}/gateway.do"),
        "2021000122671080".to_owned(),
        "sandbox-alipay-public-key.pem".to_owned(),
        format!("http://127.0.0.1:{wechat}"),
        "1230000109".to_owned(),
        "F5765756002FDD77".to_owned(),
        "PUB_KEY_ID_0112300001092026112200000000000001".to_owned(),
    ] {
        assert!(
            printed.contains(&needed),
            "{needed} missing from:\n{printed}"
        );
    }
    // Both answer as their provider would: Alipay's signed error for a call without a method,
    // WeChat Pay's 401 for a call without a signature.
    let client = moongate_testkit::net::HttpClient::new(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let post = |url: String, body: &[u8]| moongate_contract::HttpRequest {
        method: moongate_contract::HttpMethod::Post,
        url,
        headers: vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: body.to_vec(),
    };
    let answer = client
        .send(&post(
            format!("http://127.0.0.1:{alipay}/gateway.do"),
            b"app_id=1",
        ))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&answer.body);
    assert!(
        text.contains("isv.missing-method") && text.contains("\"sign\""),
        "{text}"
    );
    let answer = client
        .send(&post(
            format!("http://127.0.0.1:{wechat}/v3/pay/transactions/native"),
            b"{}",
        ))
        .await
        .unwrap();
    assert_eq!(answer.status, 401);
    assert!(String::from_utf8_lossy(&answer.body).contains("SIGN_ERROR"));
    child.kill().unwrap();
    let _ = child.wait();
}
