#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Pages Moongate serves, opened in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by `scripts/browser-setup.sh`; no browser download), driven over
//! the W3C WebDriver protocol by a small client below. Screenshots are kept as test artifacts
//! under `target/browser-artifacts/`.
//!
//! `.ci/run` sets `MOONGATE_TEST_BROWSER=1`, so CI always runs these and fails without a
//! browser; elsewhere, without `chromedriver` on the machine, they say they are skipped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Harness, bill_line};
use moongate::reconcile::run::{RunRequest, Source, reconcile};
use moongate::sandbox::statements;
use serde_json::{Value, json};
use time::OffsetDateTime;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether to run: required in CI, skipped (and said so) where no browser is installed.
fn browser_available(test: &str) -> bool {
    let required = std::env::var("MOONGATE_TEST_BROWSER").is_ok_and(|v| v == "1");
    let present =
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
    if required && !present {
        panic!("MOONGATE_TEST_BROWSER=1 but {CHROMEDRIVER} or {CHROMIUM} is missing");
    }
    if !present {
        eprintln!("{test}: SKIPPED (no Chromium; run scripts/browser-setup.sh, as .ci/run does)");
    }
    present
}

/// A chromedriver process and one browser session, closed on drop.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

/// One HTTP/1.1 exchange with chromedriver (JSON in, JSON out).
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // Read the head, then exactly Content-Length bytes (chromedriver may keep the connection).
    let mut response = Vec::new();
    let mut buffer = [0_u8; 65_536];
    let head_end = loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "chromedriver closed the connection");
        response.extend_from_slice(&buffer[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8(response[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while response.len() < head_end + length {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "chromedriver closed the connection early");
        response.extend_from_slice(&buffer[..n]);
    }
    let body = String::from_utf8(response[head_end..head_end + length].to_vec()).unwrap();
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path}: {head}\n{value}"
    );
    value
}

impl Browser {
    fn start(width: u32, height: u32) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags Chromium needs on a machine without a network or a display.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created = call(addr, "POST", "/session", Some(&capabilities));
        let session = created["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn go(&self, url: &str) {
        call(
            self.addr,
            "POST",
            &format!("/session/{}/url", self.session),
            Some(&json!({ "url": url })),
        );
    }

    /// Runs a script in the page and returns its value.
    fn script(&self, source: &str) -> Value {
        call(
            self.addr,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            Some(&json!({ "script": source, "args": [] })),
        )["value"]
            .clone()
    }

    /// Saves a PNG screenshot under `target/browser-artifacts/` and returns its path.
    fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let shot = call(
            self.addr,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            call(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
            )
        });
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciliation_report_renders_what_the_json_holds() {
    if !browser_available("the_reconciliation_report_renders_what_the_json_holds") {
        return;
    }
    let h = Harness::start().await;
    let now = OffsetDateTime::now_utc();
    // A day with a match, an amount break and a payment the ledger never saw.
    let bill_dir = tempfile::tempdir().unwrap();
    let bill = bill_dir.path().join("bill.csv");
    let mut bytes = Vec::new();
    statements::write_wechat_trade_bill(
        &mut bytes,
        vec![
            bill_line("pay_ok", 1000, now),
            bill_line("pay_amount", 2001, now),
            bill_line("pay_stranger", 990, now),
        ],
    )
    .unwrap();
    std::fs::write(&bill, bytes).unwrap();
    for (id, amount) in [("pay_ok", 1000), ("pay_amount", 2000)] {
        h.ledger_payment(id, amount, now).await;
    }
    let report = reconcile(
        &h.gateway.gateway,
        RunRequest {
            merchant_id: "shop_a".to_owned(),
            account_id: "wechat_main".to_owned(),
            day: moongate_contract::statement::beijing_day(now),
            source: Source::File(bill),
        },
        None,
    )
    .await
    .unwrap();
    let url = format!(
        "http://{}/reconciliations/{}",
        h.gateway.admin_addr.unwrap(),
        report.run_id
    );
    let expected: Vec<(String, u64)> = report
        .summary
        .iter()
        .map(|t| (t.category.unwrap().as_str().to_owned(), t.count))
        .collect();
    let breaks = report.break_count;
    let shot = tokio::task::spawn_blocking(move || {
        let browser = Browser::start(1280, 1400);
        browser.go(&url);
        let shown = browser.script(
            "return Array.from(document.querySelectorAll('#summary tr[data-category]'))\
             .map(r => [r.dataset.category, Number(r.querySelector('.count').textContent)]);",
        );
        let shown: Vec<(String, u64)> = serde_json::from_value(shown).unwrap();
        for pair in &expected {
            assert!(shown.contains(pair), "{pair:?} not shown: {shown:?}");
        }
        let listed =
            browser.script("return document.querySelectorAll('#break-list tbody tr').length;");
        assert_eq!(listed.as_u64(), Some(breaks));
        let title = browser.script("return document.title;");
        assert!(title.as_str().unwrap().contains("对账报告"), "{title}");
        // Nothing outside the page is loaded: no scripts, no external styles or images.
        let external =
            browser.script("return performance.getEntriesByType('resource').map(e => e.name);");
        assert_eq!(external, json!([]));
        browser.screenshot("reconciliation-report")
    })
    .await
    .unwrap();
    assert!(shot.exists());
    assert_eq!(report.break_count, 2);
}
