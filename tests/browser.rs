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
use moongate_testkit::sandbox::statements;
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
        Browser::launch(width, height, None)
    }

    /// A phone: Chromium's mobile emulation (viewport, touch, a phone's user agent).
    fn phone(width: u32, height: u32) -> Browser {
        Browser::launch(
            width,
            height,
            Some(json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true},
                "userAgent": common::PHONE_UA,
            })),
        )
    }

    /// A phone's browser inside a wallet's app: its user agent.
    fn in_app(width: u32, height: u32, user_agent: &str) -> Browser {
        Browser::launch(
            width,
            height,
            Some(json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0, "touch": true},
                "userAgent": user_agent,
            })),
        )
    }

    /// Runs `source` in every page this browser opens, before the page's own scripts.
    fn on_every_page(&self, source: &str) {
        call(
            self.addr,
            "POST",
            &format!("/session/{}/goog/cdp/execute", self.session),
            Some(
                &json!({"cmd": "Page.addScriptToEvaluateOnNewDocument", "params": {"source": source}}),
            ),
        );
    }

    /// A phone's browser inside WeChat (its user agent), with a stand-in for WeChat's JS bridge:
    /// `getBrandWCPayRequest` opens the sandbox's payment sheet (`/sandbox/jsapi`, which checks
    /// the parameters as WeChat does) and calls the page's callback once the sheet closes.
    fn wechat(width: u32, height: u32, sandbox: SocketAddr) -> Browser {
        let browser = Browser::in_app(width, height, common::WECHAT_UA);
        browser.on_every_page(&format!(
            "window.WeixinJSBridge = {{ invoke: function (name, p, done) {{\
               if (name !== 'getBrandWCPayRequest') return;\
               var sheet = window.open('http://{sandbox}/sandbox/jsapi?' + new URLSearchParams(p));\
               var wait = setInterval(function () {{ if (sheet.closed) {{ clearInterval(wait);\
                 done({{err_msg: 'get_brand_wcpay_request:ok'}}); }} }}, 100); }} }};"
        ));
        browser
    }

    /// A phone's browser inside the Alipay app, with a stand-in for Alipay's JS bridge:
    /// `tradePay` opens the Alipay sandbox's payment sheet (`/sandbox/tradepay`, which checks
    /// the trade and that this Alipay user is its buyer) and calls the page's callback with
    /// `resultCode` 9000 once the sheet closes.
    fn alipay(width: u32, height: u32, sandbox: SocketAddr) -> Browser {
        let browser = Browser::in_app(width, height, common::ALIPAY_UA);
        browser.on_every_page(&format!(
            "window.AlipayJSBridge = {{ call: function (name, p, done) {{\
               if (name !== 'tradePay') return;\
               var sheet = window.open('http://{sandbox}/sandbox/tradepay?tradeNO=' + encodeURIComponent(p.tradeNO));\
               var wait = setInterval(function () {{ if (sheet.closed) {{ clearInterval(wait);\
                 done({{resultCode: '9000'}}); }} }}, 100); }} }};"
        ));
        browser
    }

    fn launch(width: u32, height: u32, mobile: Option<Value>) -> Browser {
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
        let mut capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars", "--disable-popup-blocking",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        if let Some(mobile) = mobile {
            capabilities["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["mobileEmulation"] =
                mobile;
        }
        let created = call(addr, "POST", "/session", Some(&capabilities));
        let session = created["value"]["sessionId"].as_str().unwrap().to_owned();
        Browser {
            driver,
            addr,
            session,
            _profile: profile,
        }
    }

    /// Clicks the first element matching a CSS selector.
    fn click(&self, selector: &str) {
        let found = self.script(&format!(
            "const e = document.querySelector({}); if (!e) return false; e.click(); return true;",
            json!(selector)
        ));
        assert_eq!(found, json!(true), "no element {selector}");
    }

    /// Waits (up to `secs`) until a script returns `true`.
    fn wait_until(&self, secs: u64, condition: &str) {
        let started = Instant::now();
        loop {
            // A navigation in progress may make a script fail: try again.
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.script(&format!("return !!({condition});"))
            }));
            if matches!(ok, Ok(Value::Bool(true))) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "waited {secs} s for {condition}; at {}",
                self.script("return location.href;")
            );
            std::thread::sleep(Duration::from_millis(100));
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
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// `target/browser-artifacts/`, made if missing.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
            bill_line("pay_01JDQ4Z8K7X2M9P3R5T6V8W0OK", 1000, now),
            bill_line("pay_01JDQ4Z8K7X2M9P3R5T6V8W0AM", 2001, now),
            bill_line("pay_01JDQ4Z8K7X2M9P3R5T6V8W0ST", 990, now),
        ],
    )
    .unwrap();
    std::fs::write(&bill, bytes).unwrap();
    // Ids as long as real ones (the break list then needs the width a phone lacks).
    for (id, amount) in [
        ("pay_01JDQ4Z8K7X2M9P3R5T6V8W0OK", 1000),
        ("pay_01JDQ4Z8K7X2M9P3R5T6V8W0AM", 2000),
    ] {
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
    let index = format!("http://{}/reconciliations", h.gateway.admin_addr.unwrap());
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
        let shot = browser.screenshot("reconciliation-report");
        drop(browser);
        // On a phone the report and the list of runs fit the screen: wide tables scroll
        // inside themselves, the page does not.
        let phone = Browser::phone(390, 844);
        // Nothing reaches past the screen's right edge (what scrolls inside a table is clipped
        // by it, so only the table's own box counts).
        let fits = "const w = window.innerWidth; \
            return document.documentElement.scrollWidth <= w && \
            Array.from(document.querySelectorAll('main, h1, h2, p, .cards, table')) \
              .every(e => e.getBoundingClientRect().right <= w + 1);";
        phone.go(&url);
        assert_eq!(
            phone.script(fits),
            json!(true),
            "the report overflows a phone"
        );
        phone.screenshot("reconciliation-report-phone");
        phone.go(&index);
        assert_eq!(
            phone.script(fits),
            json!(true),
            "the run list overflows a phone"
        );
        let runs = phone.script("return document.querySelectorAll('#runs tr').length;");
        assert_eq!(runs.as_u64(), Some(2), "a header and the one run");
        phone.screenshot("reconciliation-index-phone");
        shot
    })
    .await
    .unwrap();
    assert!(shot.exists());
    assert_eq!(report.break_count, 2);
}

/// Decodes the one QR code in a PNG screenshot.
fn decode_qr(png_path: &std::path::Path) -> String {
    let file = std::io::BufReader::new(std::fs::File::open(png_path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Grayscale => 1,
        png::ColorType::Indexed => panic!("indexed screenshot"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let (width, height) = (info.width as usize, info.height as usize);
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, |x, y| {
        let at = y * info.line_size + x * channels;
        if channels >= 3 {
            let sum = u16::from(buffer[at]) + u16::from(buffer[at + 1]) + u16::from(buffer[at + 2]);
            u8::try_from(sum / 3).unwrap()
        } else {
            buffer[at]
        }
    });
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code on the page");
    grids[0].decode().unwrap().1
}

/// The demo storefront on a loopback port, calling the harness's gateway as shop A.
async fn storefront(
    h: &Harness,
) -> (
    std::sync::Arc<moongate_testkit::storefront::Storefront>,
    String,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shop = moongate_testkit::storefront::Storefront::new(
        h.shop_a.clone(),
        &base,
        common::WEBHOOK_SECRET_NEW.as_bytes(),
        false,
    );
    let app = moongate_testkit::storefront::router(std::sync::Arc::clone(&shop));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shop, base)
}

/// The whole journey a newcomer sees: storefront → cashier → the wallet's QR code (decoded
/// from a screenshot) → the sandbox wallet "scans and pays" → the cashier sees it and sends
/// the shopper back → the shop's order page asks Moongate and says paid → the shop's webhook
/// log shows the verified `payment.succeeded`.
async fn journey(
    method: &'static str,
    wallet: fn(&Harness) -> SocketAddr,
    qr_prefix: &'static str,
    name: &'static str,
) {
    let h = Harness::start().await;
    let wallet = wallet(&h);
    let (shop, shop_base) = storefront(&h).await;
    let shop_home = shop_base.clone();
    let gateway_base = h.shop_a.base_url.clone();
    let runtime = tokio::runtime::Handle::current();
    let api = h.shop_a.clone();
    let (payment_id, decoded) = tokio::task::spawn_blocking(move || {
        let browser = Browser::start(1280, 1000);
        browser.go(&format!("{shop_home}/"));
        browser.click("#buy");
        browser.wait_until(
            10,
            &format!(
                "location.href.startsWith({})",
                json!(format!("{gateway_base}/cashier/"))
            ),
        );
        browser.wait_until(5, "document.querySelector('#state')");
        let cashier_url = browser
            .script("return location.href;")
            .as_str()
            .unwrap()
            .to_owned();
        // The order as the shop created it, in yuan.
        let amount = browser.script("return document.querySelector('#amount').textContent;");
        assert_eq!(amount, json!("¥88.00"));
        browser.screenshot(&format!("{name}-1-cashier"));
        browser.click(&format!("button[value={method}]"));
        browser.wait_until(
            10,
            "document.querySelector('#state[data-state=pending] svg')",
        );
        let shot = browser.screenshot(&format!("{name}-2-qr"));
        let decoded = decode_qr(&shot);
        let payment_id = browser
            .script("return document.querySelector('#state').dataset.payment;")
            .as_str()
            .unwrap()
            .to_owned();
        // The QR code is the provider's own code URL for this payment.
        let payment = runtime.block_on(async {
            let answer = api
                .call(
                    moongate_contract::HttpMethod::Get,
                    &format!("/v1/payments/{payment_id}"),
                    b"",
                    None,
                )
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&answer.body).unwrap()
        });
        assert_eq!(
            payment["next_action"]["qr_data"],
            decoded.as_str(),
            "{payment}"
        );
        assert!(decoded.starts_with(qr_prefix), "{decoded}");
        // The shopper's phone: the sandbox wallet opens what the QR code holds.
        let code: String = form_urlencoded::byte_serialize(decoded.as_bytes()).collect();
        browser.go(&format!("http://{wallet}/sandbox/wallet?code={code}"));
        browser.click("#pay");
        browser.wait_until(10, "document.querySelector('#paid')");
        // Back on the cashier: it sees the payment and forwards to the shop.
        browser.go(&cashier_url);
        browser.wait_until(10, "document.querySelector('#state[data-state=paid]')");
        browser.screenshot(&format!("{name}-3-paid"));
        browser.wait_until(15, "document.querySelector('#order-status')");
        let status =
            browser.script("return document.querySelector('#order-status').dataset.status;");
        assert_eq!(status, json!("complete"));
        let shown = browser.script("return document.querySelector('#payment').textContent;");
        assert_eq!(shown, json!(payment_id));
        browser.screenshot(&format!("{name}-4-shop"));
        (payment_id, decoded)
    })
    .await
    .unwrap();
    assert!(!decoded.is_empty());

    // Moongate's signed webhook, as delivered, reaches the shop's endpoint and verifies.
    let delivered = (0..100)
        .find_map(|_| {
            let found = h
                .webhooks
                .lock()
                .unwrap()
                .iter()
                .find(|d| {
                    let event: Value = serde_json::from_str(&d.body).unwrap();
                    event["type"] == "payment.succeeded"
                        && event["data"]["object"]["id"] == payment_id.as_str()
                })
                .cloned();
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            found
        })
        .expect("payment.succeeded delivered");
    let forwarded = h
        .http
        .send(&moongate_contract::HttpRequest {
            method: moongate_contract::HttpMethod::Post,
            url: format!("{shop_base}/webhooks"),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("moongate-signature".into(), delivered.signature.clone()),
            ],
            body: delivered.body.clone().into_bytes(),
        })
        .await
        .unwrap();
    assert_eq!(forwarded.status, 204);
    let logged = shop.webhooks();
    assert!(
        logged
            .iter()
            .any(|w| w.verified && w.kind == "payment.succeeded" && w.object_id == payment_id)
    );
    let log_url = format!("{shop_base}/webhooks");
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start(1280, 800);
        browser.go(&log_url);
        let rows = browser.script("return document.querySelector('#webhooks').textContent;");
        let rows = rows.as_str().unwrap();
        assert!(
            rows.contains("payment.succeeded") && rows.contains("verified"),
            "{rows}"
        );
        // Times as a person reads them (HH:MM:SS), and the log fits the window, on a desktop
        // and on a phone.
        let time = browser
            .script("return document.querySelector('#webhooks tr:nth-child(2) td').textContent;");
        let time = time.as_str().unwrap();
        assert!(
            time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
            "{time}"
        );
        let fits = "const w = window.innerWidth; \
            return document.documentElement.scrollWidth <= w && \
            Array.from(document.querySelectorAll('#webhooks td')) \
              .every(e => e.getBoundingClientRect().right <= w + 1);";
        assert_eq!(
            browser.script(fits),
            json!(true),
            "the webhook log overflows"
        );
        browser.screenshot(&format!("{name}-5-webhooks"));
        drop(browser);
        let phone = Browser::phone(390, 844);
        phone.go(&log_url);
        assert_eq!(
            phone.script(fits),
            json!(true),
            "the webhook log overflows a phone"
        );
        phone.screenshot(&format!("{name}-6-webhooks-phone"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alipay_qr_journey_from_shop_to_webhook() {
    if !browser_available("the_alipay_qr_journey_from_shop_to_webhook") {
        return;
    }
    journey(
        "alipay_qr",
        |h| h.sandbox_addr,
        "https://qr.alipay.com/",
        "cashier-alipay",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wechat_native_journey_from_shop_to_webhook() {
    if !browser_available("the_wechat_native_journey_from_shop_to_webhook") {
        return;
    }
    journey(
        "wechat_native",
        |h| h.wechat_addr,
        "weixin://wxpay/bizpayurl?pr=",
        "cashier-wechat",
    )
    .await;
}

/// The states a shopper can meet besides paying, on a phone-sized screen: an expired link, a
/// payment the merchant closed (choose again), and an order the wallet refused (a notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cashier_renders_expired_closed_and_refused_states() {
    if !browser_available("the_cashier_renders_expired_closed_and_refused_states") {
        return;
    }
    let h = Harness::start().await;
    let now = OffsetDateTime::now_utc();
    let token = "E".repeat(43);
    let claim = moongate::store::IdemClaim {
        merchant_id: "shop_a".to_owned(),
        key: "expired".to_owned(),
        request_hash: "x".to_owned(),
        now,
        nonce: None,
    };
    h.gateway
        .gateway
        .store
        .begin_checkout(
            claim,
            moongate::cashier::Checkout {
                id: "co_EXPIREDBROWSER".to_owned(),
                token_hash: moongate::cashier::key::token_hash(&token),
                merchant_id: "shop_a".to_owned(),
                amount: 2990,
                currency: moongate_contract::Currency::CNY,
                merchant_reference: "tea-expired".to_owned(),
                description: "碧螺春 Biluochun tea".to_owned(),
                return_url: "http://shop.invalid/orders/1".to_owned(),
                cancel_url: None,
                methods: Vec::new(),
                openid: None,
                metadata: serde_json::Map::new(),
                expires_at: now - time::Duration::seconds(5),
                created_at: now - time::Duration::minutes(30),
                payment_id: None,
                legacy_token: None,
            },
        )
        .await
        .unwrap();
    let expired_url = format!("{}/cashier/{token}", h.shop_a.base_url);

    // A checkout whose payment the merchant then closes.
    let order = |reference: &str, amount: i64| {
        json!({
            "amount": amount, "currency": "CNY", "merchant_reference": reference,
            "description": "碧螺春 Biluochun tea", "return_url": "http://shop.invalid/orders/2",
            "methods": ["alipay_qr"],
        })
    };
    let (_, closed) = h.checkout(order("tea-closed", 2990), "co-closed").await;
    let closed_url = closed["url"].as_str().unwrap().to_owned();
    h.submit(
        &format!("{closed_url}/pay"),
        common::DESKTOP_UA,
        &[("method", "alipay_qr")],
    )
    .await;
    let checkout = h
        .get(
            &h.shop_a,
            &format!("/v1/checkouts/{}", closed["id"].as_str().unwrap()),
        )
        .await
        .1;
    let payment = checkout["payment"].as_str().unwrap().to_owned();
    let (status, _) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{payment}/cancel"),
            "",
            "close-it",
        )
        .await;
    assert_eq!(status, 200);

    // An order above Alipay's ceiling: refused before anything is sent.
    let (_, refused) = h
        .checkout(order("tea-huge", 10_000_000_001), "co-huge")
        .await;
    let refused_url = refused["url"].as_str().unwrap().to_owned();

    tokio::task::spawn_blocking(move || {
        let browser = Browser::phone(390, 844);
        browser.go(&expired_url);
        let state = browser.script("return document.querySelector('#state').dataset.state;");
        assert_eq!(state, json!("expired"));
        let shown = browser.script("return document.body.innerText;");
        let shown = shown.as_str().unwrap();
        assert!(
            shown.contains("订单已过期") && shown.contains("expired"),
            "{shown}"
        );
        assert!(shown.contains("¥29.90"), "{shown}");
        // Readable on a phone: nothing wider than the screen.
        let widths =
            browser.script("return [document.documentElement.scrollWidth, window.innerWidth];");
        assert_eq!(widths, json!([390, 390]), "no horizontal scrolling");
        browser.screenshot("cashier-state-expired");

        browser.go(&closed_url);
        browser.wait_until(5, "document.querySelector('#state[data-state=canceled]')");
        let shown = browser.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("支付已关闭"), "{shown}");
        assert_eq!(
            browser.script("return !!document.querySelector('button[value=alipay_qr]');"),
            json!(true),
            "the shopper can choose again"
        );
        browser.screenshot("cashier-state-closed");

        browser.go(&refused_url);
        browser.click("button[value=alipay_qr]");
        browser.wait_until(10, "document.querySelector('#notice')");
        let notice = browser.script("return document.querySelector('#notice').innerText;");
        assert!(notice.as_str().unwrap().contains("refused"), "{notice}");
        browser.screenshot("cashier-state-refused");
        let external =
            browser.script("return performance.getEntriesByType('resource').map(e => e.name);");
        assert_eq!(external, json!([]), "no outside resource");
    })
    .await
    .unwrap();
}

/// A till's code in a browser: its printed poster's QR decodes to the code's URL; on a phone
/// the page takes an amount, goes on to the cashier and, paid, to the code's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_poster_decodes_and_its_page_pays_on_a_phone() {
    if !browser_available("the_code_poster_decodes_and_its_page_pays_on_a_phone") {
        return;
    }
    let h = Harness::start().await;
    let body = json!({"name": "二号收银台 Till 2", "currency": "CNY", "methods": ["alipay_qr"]});
    let (status, code) = h
        .post(&h.shop_a, "/v1/codes", &body.to_string(), "b-code")
        .await;
    assert_eq!(status, 201, "{code}");
    let url = code["url"].as_str().unwrap().to_owned();
    let id = code["id"].as_str().unwrap();
    let poster = h
        .shop_a
        .call(
            moongate_contract::HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.svg"),
            b"",
            None,
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let poster_path = dir.path().join("poster.svg");
    std::fs::write(&poster_path, &poster.body).unwrap();
    // The PNG poster, drawn by Moongate itself: its QR decodes to the code's URL.
    let png = h
        .shop_a
        .call(
            moongate_contract::HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.png"),
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(png.status, 200);
    let png_path = artifacts().join("code-poster-print.png");
    std::fs::write(&png_path, &png.body).unwrap();
    assert_eq!(
        decode_qr(&png_path),
        url,
        "the PNG poster's QR is the code's URL"
    );
    // A till's order: its checkout's one QR, for the till's screen.
    let (_, checkout) = h
        .checkout(
            json!({"amount": 1500, "currency": "CNY", "merchant_reference": "till-1",
                   "description": "Tea", "return_url": "http://shop.invalid/done"}),
            "b-till",
        )
        .await;
    let till = h
        .shop_a
        .call(
            moongate_contract::HttpMethod::Get,
            &format!("/v1/checkouts/{}/qr.svg", checkout["id"].as_str().unwrap()),
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(till.status, 200);
    let till_path = dir.path().join("till.svg");
    std::fs::write(&till_path, &till.body).unwrap();
    let checkout_url = checkout["url"].as_str().unwrap().to_owned();
    let (shown_url, receipt) = tokio::task::spawn_blocking(move || {
        let browser = Browser::start(420, 600);
        browser.go(&format!("file://{}", poster_path.display()));
        let shot = browser.screenshot("code-poster");
        assert_eq!(decode_qr(&shot), url, "the poster's QR is the code's URL");
        browser.go(&format!("file://{}", till_path.display()));
        let shot = browser.screenshot("checkout-qr");
        assert_eq!(
            decode_qr(&shot),
            checkout_url,
            "the till's QR is the cashier URL"
        );
        drop(browser);

        let phone = Browser::phone(390, 844);
        phone.go(&url);
        phone.screenshot("code-page-keypad");
        let widths =
            phone.script("return [document.documentElement.scrollWidth, window.innerWidth];");
        assert_eq!(widths, json!([390, 390]), "no horizontal scrolling");
        phone.script("document.querySelector('#amount-field').value = '23.40'; return 0;");
        phone.click("#pay");
        phone.wait_until(10, "document.querySelector('#order')");
        let shown = phone.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("¥23.40"), "{shown}");
        phone.screenshot("code-cashier");
        let cashier = phone.script("return location.href;");
        (cashier.as_str().unwrap().to_owned(), phone)
    })
    .await
    .unwrap();
    // The shopper pays the order the cashier opened (its page in the phone's browser).
    let page = h.browse(&shown_url, common::PHONE_UA).await;
    let html = String::from_utf8(page.body).unwrap();
    assert!(
        html.contains("alipay_wap") || html.contains("alipay_qr"),
        "{html}"
    );
    let chosen = h
        .submit(
            &format!("{shown_url}/pay"),
            common::PHONE_UA,
            &[("method", "alipay_qr")],
        )
        .await;
    assert_eq!(chosen.status, 303);
    let (_, payments) = h.get(&h.shop_a, "/v1/payments?limit=1").await;
    let payment = payments["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(payments["data"][0]["metadata"]["code_id"], code["id"]);
    h.sandbox("/sandbox/pay", json!({"out_trade_no": payment}))
        .await;
    h.wait_for(&h.shop_a, &payment, "succeeded").await;
    let checkout = payments["data"][0]["metadata"]["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let code_url = code["url"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        receipt.go(&format!("{code_url}?receipt={checkout}"));
        let state = receipt.script("return document.querySelector('#state').dataset.state;");
        assert_eq!(state, json!("paid"));
        receipt.screenshot("code-receipt");
    })
    .await
    .unwrap();
}

/// Inside WeChat: a shop's code scanned, the amount paid in WeChat's own sheet. The cashier
/// asks WeChat who the payer is (OAuth `snsapi_base`, silent), offers `wechat_jsapi`, the
/// bridge pays (the sandbox verifies the pay-sign and that this WeChat user is the payer), and
/// the shopper lands on the code's receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_scanned_inside_wechat_pays_in_wechats_sheet() {
    if !browser_available("a_code_scanned_inside_wechat_pays_in_wechats_sheet") {
        return;
    }
    let h = Harness::start().await;
    h.shop_b_webhook(&format!("http://{}/hooks", h.hook_addr));
    let body = json!({"name": "面馆 Noodle bar", "currency": "CNY", "amount": 2600});
    let (status, code) = h
        .post(&h.shop_b, "/v1/codes", &body.to_string(), "wx-b-code")
        .await;
    assert_eq!(status, 201, "{code}");
    let url = code["url"].as_str().unwrap().to_owned();
    let sandbox = h.wechat_addr;
    tokio::task::spawn_blocking(move || {
        let browser = Browser::wechat(390, 844, sandbox);
        browser.go(&url);
        browser.screenshot("code-wechat-page");
        browser.click("#pay");
        // Code → checkout → WeChat's OAuth → back: the page offers WeChat's in-app payment.
        browser.wait_until(15, "document.querySelector('button[value=wechat_jsapi]')");
        browser.screenshot("code-wechat-cashier");
        browser.click("button[value=wechat_jsapi]");
        // The bridge pays; the page follows the notification to the code's receipt.
        browser.wait_until(30, "document.querySelector('#state[data-state=paid]') && location.search.includes('receipt=')");
        let shown = browser.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("¥26.00"), "{shown}");
        browser.screenshot("code-wechat-receipt");
    })
    .await
    .unwrap();
    let (_, payments) = h.get(&h.shop_b, "/v1/payments?limit=1").await;
    assert_eq!(payments["data"][0]["method"], "wechat_jsapi");
    assert_eq!(payments["data"][0]["status"], "succeeded");
    assert_eq!(payments["data"][0]["metadata"]["code_id"], code["id"]);
    let id = payments["data"][0]["id"].as_str().unwrap();
    let event = h
        .verified_webhook("payment.succeeded", id, common::WEBHOOK_SECRET_OLD)
        .await;
    assert_eq!(event["data"]["object"]["metadata"]["code_id"], code["id"]);
}

/// Inside the Alipay app: a code without an amount, the amount typed, paid in Alipay's own
/// sheet. The cashier asks Alipay who pays (`auth_base`, silent), offers `alipay_jsapi`, the
/// bridge's `tradePay` pays (the sandbox checks that this Alipay user is the trade's buyer),
/// the shopper lands on the receipt and the merchant's webhook verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_scanned_inside_alipay_pays_in_alipays_sheet() {
    if !browser_available("a_code_scanned_inside_alipay_pays_in_alipays_sheet") {
        return;
    }
    let h = Harness::start().await;
    h.shop_b_webhook(&format!("http://{}/hooks", h.hook_addr));
    let body = json!({"name": "饺子馆 Dumplings", "currency": "CNY"});
    let (status, code) = h
        .post(&h.shop_b, "/v1/codes", &body.to_string(), "ali-b-code")
        .await;
    assert_eq!(status, 201, "{code}");
    let url = code["url"].as_str().unwrap().to_owned();
    let sandbox = h.sandbox_addr;
    tokio::task::spawn_blocking(move || {
        let browser = Browser::alipay(390, 844, sandbox);
        browser.go(&url);
        browser.screenshot("code-alipay-page");
        browser.script("document.querySelector('#amount-field').value = '18.80'; return 0;");
        browser.click("#pay");
        // Code → checkout → Alipay's user authorisation → back: Alipay's in-app payment.
        browser.wait_until(15, "document.querySelector('button[value=alipay_jsapi]')");
        browser.screenshot("code-alipay-cashier");
        browser.click("button[value=alipay_jsapi]");
        browser.wait_until(30, "document.querySelector('#state[data-state=paid]') && location.search.includes('receipt=')");
        let shown = browser.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("¥18.80"), "{shown}");
        browser.screenshot("code-alipay-receipt");
    })
    .await
    .unwrap();
    let (_, payments) = h.get(&h.shop_b, "/v1/payments?limit=1").await;
    let payment = &payments["data"][0];
    assert_eq!(payment["method"], "alipay_jsapi");
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["amount"], 1880);
    assert_eq!(payment["metadata"]["code_id"], code["id"]);
    let id = payment["id"].as_str().unwrap();
    h.verified_webhook("payment.succeeded", id, common::WEBHOOK_SECRET_OLD)
        .await;
}

/// Inside 云闪付: the code's amount typed, then UnionPay's mobile gateway page (the signed
/// form the cashier posts), paid there; UnionPay brings the shopper back, the payment
/// settles by UnionPay's notification, and the merchant's webhook verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_scanned_inside_unionpay_pays_on_unionpays_page() {
    if !browser_available("a_code_scanned_inside_unionpay_pays_on_unionpays_page") {
        return;
    }
    let h = Harness::start().await;
    let body = json!({"name": "三号收银台 Till 3", "currency": "CNY"});
    let (status, code) = h
        .post(&h.shop_a, "/v1/codes", &body.to_string(), "up-a-code")
        .await;
    assert_eq!(status, 201, "{code}");
    let url = code["url"].as_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::in_app(390, 844, common::UNIONPAY_UA);
        browser.go(&url);
        browser.screenshot("code-unionpay-page");
        browser.script("document.querySelector('#amount-field').value = '9.90'; return 0;");
        browser.click("#pay");
        browser.wait_until(15, "document.querySelector('button[value=unionpay_wap]')");
        let offered = browser.script(
            "return Array.from(document.querySelectorAll('button[name=method]')).map(b => b.value);",
        );
        assert!(
            offered.as_array().unwrap().iter().all(|m| m.as_str().unwrap().starts_with("unionpay")),
            "only UnionPay inside 云闪付: {offered}"
        );
        browser.screenshot("code-unionpay-cashier");
        browser.click("button[value=unionpay_wap]");
        // The cashier's form goes to UnionPay's gateway page (the sandbox's).
        browser.wait_until(15, "document.querySelector('#wallet-form')");
        browser.click("#wallet-form button");
        browser.wait_until(15, "document.querySelector('#pay')");
        browser.screenshot("code-unionpay-gateway");
        browser.click("#pay");
        browser.wait_until(30, "document.querySelector('#state[data-state=paid]') && location.search.includes('receipt=')");
        let shown = browser.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("¥9.90"), "{shown}");
        browser.screenshot("code-unionpay-receipt");
    })
    .await
    .unwrap();
    let (_, payments) = h.get(&h.shop_a, "/v1/payments?limit=1").await;
    let payment = &payments["data"][0];
    assert_eq!(payment["method"], "unionpay_wap");
    assert_eq!(payment["status"], "succeeded");
    assert_eq!(payment["metadata"]["code_id"], code["id"]);
    let id = payment["id"].as_str().unwrap();
    h.verified_webhook("payment.succeeded", id, common::WEBHOOK_SECRET_NEW)
        .await;
}

/// A desktop browser is told to scan the code with a wallet app (the code's QR, decoded from
/// the screenshot) and, typing an amount, gets each wallet's QR code; a disabled code's page
/// says so; an OAuth `state` replayed after its use is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_on_a_desktop_a_disabled_code_and_a_replayed_state() {
    if !browser_available("a_code_on_a_desktop_a_disabled_code_and_a_replayed_state") {
        return;
    }
    let h = Harness::start().await;
    let body = json!({"name": "Front desk", "currency": "CNY"});
    let (_, code) = h
        .post(&h.shop_b, "/v1/codes", &body.to_string(), "desk-code")
        .await;
    let url = code["url"].as_str().unwrap().to_owned();
    let (_, gone) = h
        .post(
            &h.shop_b,
            "/v1/codes",
            &json!({"name": "Old till", "currency": "CNY"}).to_string(),
            "gone-code",
        )
        .await;
    let (status, _) = h
        .post(
            &h.shop_b,
            &format!("/v1/codes/{}/disable", gone["id"].as_str().unwrap()),
            "",
            "gone-off",
        )
        .await;
    assert_eq!(status, 200);
    let gone_url = gone["url"].as_str().unwrap().to_owned();
    // A round trip through WeChat's OAuth, done once (as the shopper's WeChat did), so its
    // answer can be replayed.
    let scanned = h
        .submit(&url, common::WECHAT_UA, &[("amount", "3.00")])
        .await;
    assert_eq!(scanned.status, 303);
    let cashier = scanned
        .headers
        .iter()
        .find(|(k, _)| k == "location")
        .unwrap()
        .1
        .clone();
    let in_wechat = |url: String, cookie: Option<String>| {
        let mut headers = vec![("user-agent".to_owned(), common::WECHAT_UA.to_owned())];
        headers.extend(cookie.map(|c| ("cookie".to_owned(), c)));
        moongate_contract::HttpRequest {
            method: moongate_contract::HttpMethod::Get,
            url,
            headers,
            body: vec![],
        }
    };
    let location = |r: &moongate_contract::HttpResponse| {
        r.headers
            .iter()
            .find(|(k, _)| k == "location")
            .unwrap()
            .1
            .clone()
    };
    let asked = h.http.send(&in_wechat(cashier, None)).await.unwrap();
    let cookie = asked
        .headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .unwrap()
        .1
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let back = h
        .http
        .send(&in_wechat(location(&asked), None))
        .await
        .unwrap();
    let replayed = location(&back);
    let used = h
        .http
        .send(&in_wechat(replayed.clone(), Some(cookie)))
        .await
        .unwrap();
    assert_eq!(used.status, 303);
    let wechat = h.wechat_addr;
    let desk_url = url.clone();
    tokio::task::spawn_blocking(move || {
        let desk = Browser::start(1280, 900);
        desk.go(&desk_url);
        let shown = desk.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("Scan this code"), "{shown}");
        let shot = desk.screenshot("code-desktop-page");
        assert_eq!(decode_qr(&shot), desk_url, "the desktop page shows the code itself");
        desk.script("document.querySelector('#amount-field').value = '5.00'; return 0;");
        desk.click("#pay");
        desk.wait_until(15, "document.querySelector('button[value=alipay_qr]') && document.querySelector('button[value=wechat_native]')");
        desk.click("button[value=wechat_native]");
        desk.wait_until(15, "document.querySelector('#state[data-method=wechat_native] svg')");
        desk.screenshot("code-desktop-wallet-qr");
        desk.go(&gone_url);
        let shown = desk.script("return document.body.innerText;");
        assert!(shown.as_str().unwrap().contains("停用"), "{shown}");
        assert!(desk.script("return document.querySelector('#pay') === null;").as_bool().unwrap());
        desk.screenshot("code-disabled");
        drop(desk);

        // Inside WeChat: WeChat's answer (state and code) replayed after its use is refused.
        let phone = Browser::wechat(390, 844, wechat);
        phone.go(&replayed);
        let state = phone.script("return document.querySelector('#state').dataset.state;");
        assert_eq!(state, json!("missing"));
        phone.screenshot("code-replayed-state");
    })
    .await
    .unwrap();
}
