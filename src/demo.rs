//! `moongate demo`: the gateway, the strict Alipay and WeChat Pay sandboxes and a webhook
//! receiver on loopback, with the checked-in demo config and public test keys, then scripted
//! payments through the real API (one per wallet, a payment code, refunds) so the whole path is
//! visible.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use moongate_contract::{HttpMethod, ProviderKind};
use serde_json::Value;
use tokio::net::TcpListener;

use moongate::config;
use moongate::server;
use moongate_testkit::client::MerchantClient;
use moongate_testkit::sandbox;
use moongate_testkit::sandbox::standard::Standard;
use moongate_testkit::storefront;

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

    // 1. The strict sandboxes (Alipay; WeChat Pay in public-key mode), knowing the demo app
    // and merchant, with the public test keys under fixtures/.
    let standard = Standard::load(&options.fixtures, 100).map_err(anyhow::Error::msg)?;
    let sandbox_settings = standard.alipay;
    let wechat_settings = standard.wechatpay;
    let unionpay_settings = standard.unionpay;
    let sandbox_addr: SocketAddr = ([127, 0, 0, 1], 8090).into();
    let (_sandbox, _sandbox_task) = sandbox::start_on(
        sandbox_settings,
        bind(sandbox_addr, "the Alipay sandbox").await?,
    )
    .await?;

    let wechat_addr: SocketAddr = ([127, 0, 0, 1], 8092).into();
    let (_wechat, _wechat_task) = sandbox::wechat::start_on(
        wechat_settings,
        bind(wechat_addr, "the WeChat Pay sandbox").await?,
    )
    .await?;

    let unionpay_addr: SocketAddr = ([127, 0, 0, 1], 8094).into();
    let (_unionpay, _unionpay_task) = sandbox::unionpay::start_on(
        unionpay_settings,
        bind(unionpay_addr, "the UnionPay sandbox").await?,
    )
    .await?;

    // 2. A merchant webhook receiver that checks signatures.
    let webhook_secret = config::resolve_secret(
        &moongate_contract::SecretRef::File("webhook.secret".into()),
        &demo_dir,
    )
    .map_err(anyhow::Error::msg)?;
    let receiver_addr: SocketAddr = ([127, 0, 0, 1], 8091).into();
    // The demo storefront is the merchant's own site: its shop pages and its webhook endpoint.
    let shop_key = config::resolve_secret(
        &moongate_contract::SecretRef::File("shop-key.secret".into()),
        &demo_dir,
    )
    .map_err(anyhow::Error::msg)?;
    let shop_client = MerchantClient::new(
        &format!("http://{gateway_addr}"),
        "demo_shop_k1",
        shop_key.as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let shop = storefront::Storefront::new(
        shop_client,
        &format!("http://{receiver_addr}"),
        webhook_secret.as_bytes(),
        true,
    );
    let receiver = storefront::router(shop);
    let receiver_listener = bind(receiver_addr, "the demo storefront").await?;
    tokio::spawn(async move {
        let _ = axum::serve(receiver_listener, receiver).await;
    });

    // 3. Moongate itself, on the embedded SQLite ledger.
    let ledger = match &config.ledger {
        crate::config::LedgerBackend::Sqlite(path) => tidy(path).display().to_string(),
        crate::config::LedgerBackend::Postgres { .. } => "PostgreSQL".to_owned(),
    };
    // Reports beside the statements (by default both beside the ledger file).
    let reports = config
        .reconciliation
        .statement_dir
        .parent()
        .map(|dir| dir.join("reports"))
        .unwrap_or_else(|| PathBuf::from("reports"));
    let store = server::open_store(&config).await?;
    let running = server::start_on(config, store, bind(gateway_addr, "Moongate").await?).await?;
    println!(
        "Moongate listening on http://{gateway_addr} (ledger {}){}",
        ledger,
        running
            .admin_addr
            .map(|a| format!("; metrics on http://{a}/metrics"))
            .unwrap_or_default()
    );
    println!(
        "Alipay sandbox on http://{sandbox_addr}/gateway.do; WeChat Pay sandbox on http://{wechat_addr}/v3/…; UnionPay sandbox on http://{unionpay_addr}/gateway/api; webhook receiver on http://{receiver_addr}/webhooks\n"
    );

    if options.walkthrough {
        walkthrough(
            gateway_addr,
            [sandbox_addr, wechat_addr, unionpay_addr],
            &demo_dir,
            running.admin_addr,
            &reports,
        )
        .await?;
        reconciliation(
            &running.gateway,
            [sandbox_addr, wechat_addr, unionpay_addr],
            &reports,
            running.admin_addr,
        )
        .await?;
    }
    println!(
        "\nTry the whole journey in a browser: open the demo storefront at http://{receiver_addr}/\
         \n  (storefront → Moongate's cashier page → \"Sandbox wallet: scan and pay\" → success → back to the shop;\
         \n  the shop's webhook log is at http://{receiver_addr}/webhooks)\n\
         \nOr call the API yourself (the demo merchant's key id is demo_shop_k1, its secret is in fixtures/demo/shop-key.secret):\n\
         \n  examples/moongate-request.sh POST /v1/payments '{{\"amount\":8888,\"currency\":\"CNY\",\"method\":\"alipay_qr\",\"merchant_reference\":\"order-2\",\"description\":\"Tea set\"}}'\
         \n  curl -s -X POST http://{sandbox_addr}/sandbox/pay -H 'content-type: application/json' -d '{{\"out_trade_no\":\"<payment id>\"}}'\
         \n  (WeChat Pay: \"method\":\"wechat_native\", then the same /sandbox/pay on http://{wechat_addr};\
         \n   UnionPay: \"method\":\"unionpay_qr\", on http://{unionpay_addr})\
         \n  examples/moongate-request.sh GET /v1/payments/<payment id>\n\
         \nA second merchant, demo_market, has its webhook where nothing listens: pay one of its orders and its\
         \nevents fail and are retried, while the tea house's keep arriving (its key: demo_market_k1, fixtures/demo/market-key.secret):\n\
         \n  MOONGATE_KEY_ID=demo_market_k1 MOONGATE_SECRET_FILE=fixtures/demo/market-key.secret examples/moongate-request.sh GET /v1/events\n\
         \nIts Alipay app is in Alipay's certificate mode; to see Alipay move to its next certificate (the market\
         \nholds both, so its payments go on): curl -s -X POST http://{sandbox_addr}/sandbox/rotate-certificate\n\
         \nThe market and a third shop, demo_stall, are sub-merchants of one WeChat Pay service provider (partner\
         \ndemo_sp): their WeChat Pay calls are signed with the provider's key and name their own sub_mchid, and each\
         \nreconciles its own bill (the stall's key: demo_stall_k1, fixtures/demo/stall-key.secret).\n"
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

/// A header of an answer (a redirect's `location`, a `set-cookie`), or why there is none.
fn header(answer: &moongate_contract::HttpResponse, name: &str) -> anyhow::Result<String> {
    answer
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .with_context(|| format!("no {name} header (HTTP {})", answer.status))
}

/// Polls a payment until it has `status`.
async fn wait_status(client: &MerchantClient, id: &str, want: &str) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    for _ in 0..50 {
        let response = client
            .call(HttpMethod::Get, &format!("/v1/payments/{id}"), b"", None)
            .await?;
        last = serde_json::from_slice(&response.body)?;
        if text(&last, "/status") == want {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("payment {id} did not reach {want}: {last}")
}

async fn create(client: &MerchantClient, key: &str, body: Value) -> anyhow::Result<Value> {
    let response = client
        .call(
            HttpMethod::Post,
            "/v1/payments",
            body.to_string().as_bytes(),
            Some(key),
        )
        .await?;
    if response.status != 201 {
        bail!(
            "create failed: HTTP {} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
    }
    let payment: Value = serde_json::from_slice(&response.body)?;
    println!(
        "   -> {} status={} next_action={}",
        text(&payment, "/id"),
        text(&payment, "/status"),
        payment.pointer("/next_action").unwrap_or(&Value::Null)
    );
    Ok(payment)
}

async fn shopper_pays(sandbox: SocketAddr, id: &str) -> anyhow::Result<()> {
    let pay = moongate::outbound::Outbound::new(Duration::from_secs(2), Duration::from_secs(10))
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
    Ok(())
}

async fn refund(
    client: &MerchantClient,
    id: &str,
    key: &str,
    body: &[u8],
) -> anyhow::Result<Value> {
    let response = client
        .call(
            HttpMethod::Post,
            &format!("/v1/payments/{id}/refunds"),
            body,
            Some(key),
        )
        .await?;
    let refund: Value = serde_json::from_slice(&response.body)?;
    println!(
        "   -> {} status={}",
        text(&refund, "/id"),
        text(&refund, "/status")
    );
    Ok(refund)
}

async fn walkthrough(
    gateway: SocketAddr,
    [alipay, wechat, unionpay]: [SocketAddr; 3],
    demo_dir: &Path,
    admin: Option<SocketAddr>,
    reports: &Path,
) -> anyhow::Result<()> {
    let secret = read(&demo_dir.join("shop-key.secret"))?;
    let client = MerchantClient::new(
        &format!("http://{gateway}"),
        "demo_shop_k1",
        secret.trim_end().as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let reference = format!("demo-{}", time::OffsetDateTime::now_utc().unix_timestamp());

    println!("1. POST /v1/payments  (¥88.88, alipay_qr)");
    let payment = create(
        &client,
        &format!("{reference}-ali"),
        serde_json::json!({
            "amount": 8888, "currency": "CNY", "method": "alipay_qr",
            "merchant_reference": format!("{reference}-ali"), "description": "Moon cake gift box",
        }),
    )
    .await?;
    let alipay_id = text(&payment, "/id").to_owned();
    println!("2. The shopper scans with Alipay and pays (sandbox control endpoint)");
    shopper_pays(alipay, &alipay_id).await?;
    let paid = wait_status(&client, &alipay_id, "succeeded").await?;
    println!(
        "3. Alipay notified Moongate -> status=succeeded transaction={}",
        text(&paid, "/provider/transaction_id")
    );

    println!("4. POST /v1/payments  (¥66.00, wechat_native) — same API, the other wallet");
    let payment = create(
        &client,
        &format!("{reference}-wx"),
        serde_json::json!({
            "amount": 6600, "currency": "CNY", "method": "wechat_native",
            "merchant_reference": format!("{reference}-wx"), "description": "Pu'er tea cake",
        }),
    )
    .await?;
    let wechat_id = text(&payment, "/id").to_owned();
    println!("5. The shopper scans with WeChat and pays");
    shopper_pays(wechat, &wechat_id).await?;
    let paid = wait_status(&client, &wechat_id, "succeeded").await?;
    println!(
        "6. WeChat Pay sent an encrypted, signed notification -> status=succeeded transaction={}",
        text(&paid, "/provider/transaction_id")
    );

    println!(
        "7. POST /v1/payments  (¥12.00, payment_code) — the till scans the shopper's WeChat code"
    );
    create(
        &client,
        &format!("{reference}-till"),
        serde_json::json!({
            "amount": 1200, "currency": "CNY", "method": "payment_code",
            "merchant_reference": format!("{reference}-till"), "description": "Counter sale",
            "payer": {"payment_code": "134567890123456789"},
        }),
    )
    .await?;

    println!("8. Refunds: ¥8.88 of the Alipay payment, ¥6.60 of the WeChat one");
    refund(
        &client,
        &alipay_id,
        &format!("{reference}-ali-refund"),
        br#"{"amount":888,"reason":"broken box"}"#,
    )
    .await?;
    refund(
        &client,
        &wechat_id,
        &format!("{reference}-wx-refund"),
        br#"{"amount":660,"reason":"late delivery"}"#,
    )
    .await?;

    println!("9. POST /v1/payments  (¥38.00, unionpay_qr) — the third network, 云闪付");
    let payment = create(
        &client,
        &format!("{reference}-up"),
        serde_json::json!({
            "amount": 3800, "currency": "CNY", "method": "unionpay_qr",
            "merchant_reference": format!("{reference}-up"), "description": "Jasmine tea tin",
        }),
    )
    .await?;
    let unionpay_id = text(&payment, "/id").to_owned();
    println!("10. The shopper scans with 云闪付 and pays");
    shopper_pays(unionpay, &unionpay_id).await?;
    let paid = wait_status(&client, &unionpay_id, "succeeded").await?;
    println!(
        "11. UnionPay's signed notification (its certificate chained to the configured root) -> status=succeeded queryId={}",
        text(&paid, "/provider/transaction_id")
    );
    println!("12. The whole ¥38.00 back on the same clearing day: a consume undo (31)");
    refund(
        &client,
        &unionpay_id,
        &format!("{reference}-up-refund"),
        br#"{"reason":"changed mind"}"#,
    )
    .await?;
    sub_merchants(gateway, wechat, demo_dir, &reference).await?;
    if let Some(admin) = admin {
        isv_authorisation(gateway, admin, alipay, demo_dir, &reference).await?;
    }
    let poster = reports
        .parent()
        .unwrap_or(Path::new("."))
        .join("code-poster.svg");
    payment_code(&client, alipay, &reference, &poster).await?;
    // WeChat and UnionPay refunds settle asynchronously; their notifications follow.
    tokio::time::sleep(Duration::from_millis(800)).await;
    Ok(())
}

/// Step 13: two shops under one WeChat Pay service provider. Each call is signed with the
/// provider's key and names the shop's sub-merchant; each notification, verified with the
/// provider's keys, reaches the shop whose `sub_mchid` it names.
async fn sub_merchants(
    gateway: SocketAddr,
    wechat: SocketAddr,
    demo_dir: &Path,
    reference: &str,
) -> anyhow::Result<()> {
    println!(
        "13. Two shops under one WeChat Pay service provider (partner demo_sp, sp_mchid 1900009191)"
    );
    for (merchant, key_id, secret_file, amount, refunded) in [
        (
            "demo_market",
            "demo_market_k1",
            "market-key.secret",
            2800,
            800,
        ),
        ("demo_stall", "demo_stall_k1", "stall-key.secret", 1500, 500),
    ] {
        let secret = read(&demo_dir.join(secret_file))?;
        let client = MerchantClient::new(
            &format!("http://{gateway}"),
            key_id,
            secret.trim_end().as_bytes(),
        )
        .map_err(anyhow::Error::msg)?;
        let payment = create(
            &client,
            &format!("{reference}-{merchant}"),
            serde_json::json!({
                "amount": amount, "currency": "CNY", "method": "wechat_native",
                "merchant_reference": format!("{reference}-{merchant}"),
                "description": "Green tea, loose leaf",
            }),
        )
        .await?;
        let id = text(&payment, "/id").to_owned();
        shopper_pays(wechat, &id).await?;
        let paid = wait_status(&client, &id, "succeeded").await?;
        println!(
            "   {merchant}: {id} placed by the provider for its sub-merchant, notified -> status={} transaction={}",
            text(&paid, "/status"),
            text(&paid, "/provider/transaction_id")
        );
        refund(
            &client,
            &id,
            &format!("{reference}-{merchant}-refund"),
            serde_json::json!({ "amount": refunded })
                .to_string()
                .as_bytes(),
        )
        .await?;
    }
    Ok(())
}

/// Step 14: the stall authorises the Alipay ISV app through Moongate, as a shopkeeper would in
/// a browser: the link from the admin listener, Alipay's consent page, back to Moongate, which
/// exchanges the code and keeps the token; then the stall takes an Alipay payment through the
/// ISV app.
async fn isv_authorisation(
    gateway: SocketAddr,
    admin: SocketAddr,
    alipay: SocketAddr,
    demo_dir: &Path,
    reference: &str,
) -> anyhow::Result<()> {
    use moongate_contract::HttpRequest;
    let http = moongate::outbound::Outbound::new(Duration::from_secs(2), Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let send = |method, url: String, headers: Vec<(String, String)>, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let request = HttpRequest {
                method,
                url,
                headers,
                body,
            };
            http.send(&request).await.map_err(anyhow::Error::msg)
        }
    };
    println!(
        "14. The stall authorises the Alipay ISV app demo_isv through Moongate (no token configured)"
    );
    let started = send(
        HttpMethod::Post,
        format!("http://{admin}/authorisations"),
        vec![("content-type".into(), "application/json".into())],
        br#"{"merchant":"demo_stall","account":"alipay_isv"}"#.to_vec(),
    )
    .await?;
    let started: Value = serde_json::from_slice(&started.body)?;
    let link = text(&started, "/url").to_owned();
    println!("   POST /authorisations (admin) -> a link for the stall, alive 24 h: {link}");
    let opened = send(HttpMethod::Get, link, vec![], vec![]).await?;
    let consent = header(&opened, "location")?;
    let cookie = header(&opened, "set-cookie")?;
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let consent_url = url::Url::parse(&consent)?;
    println!(
        "   the stall's browser opens it -> Alipay's consent page {}{} (state bound to that browser)",
        consent_url.host_str().unwrap_or_default(),
        consent_url.path()
    );
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in consent_url.query_pairs() {
        form.append_pair(&key, &value);
    }
    form.append_pair("merchant_app_id", "2021000122676666");
    let back = send(
        HttpMethod::Post,
        format!("http://{alipay}/oauth2/appToAppAuth.htm"),
        vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        form.finish().into_bytes(),
    )
    .await?;
    let callback = header(&back, "location")?;
    let done = send(
        HttpMethod::Get,
        callback,
        vec![("cookie".into(), cookie)],
        vec![],
    )
    .await?;
    if done.status != 200 {
        bail!(
            "the authorisation did not complete: HTTP {}: {}",
            done.status,
            String::from_utf8_lossy(&done.body)
        );
    }
    let list = send(
        HttpMethod::Get,
        format!("http://{admin}/authorisations"),
        vec![],
        vec![],
    )
    .await?;
    let list: Value = serde_json::from_slice(&list.body)?;
    let status = list
        .get("data")
        .and_then(Value::as_array)
        .and_then(|all| all.iter().find(|a| a["merchant"] == "demo_stall"))
        .map(|a| format!("{} until {}", text(a, "/status"), text(a, "/expires_at")))
        .unwrap_or_default();
    println!(
        "   the stall consents; Alipay sends it back to /authorise/callback -> code exchanged (alipay.open.auth.token.app), tokens sealed in the ledger: {status}"
    );
    let secret = read(&demo_dir.join("stall-key.secret"))?;
    let client = MerchantClient::new(
        &format!("http://{gateway}"),
        "demo_stall_k1",
        secret.trim_end().as_bytes(),
    )
    .map_err(anyhow::Error::msg)?;
    let payment = create(
        &client,
        &format!("{reference}-stall-ali"),
        serde_json::json!({
            "amount": 1800, "currency": "CNY", "method": "alipay_qr",
            "merchant_reference": format!("{reference}-stall-ali"), "description": "Oolong, 50 g",
        }),
    )
    .await?;
    let id = text(&payment, "/id").to_owned();
    shopper_pays(alipay, &id).await?;
    let paid = wait_status(&client, &id, "succeeded").await?;
    println!(
        "   demo_stall: {id} placed by the ISV app with the stall's token, notified (auth_app_id 2021000122676666) -> status={} trade_no={}",
        text(&paid, "/status"),
        text(&paid, "/provider/transaction_id")
    );
    Ok(())
}

/// Step 15: one printed code for every wallet (聚合码): the tea house makes a code for its
/// counter; a shopper scans it, types the amount, pays in the cashier it lands on, and gets
/// the code's receipt.
async fn payment_code(
    client: &MerchantClient,
    alipay: SocketAddr,
    reference: &str,
    poster_path: &Path,
) -> anyhow::Result<()> {
    println!("15. One code for every wallet (聚合码) at the tea house's counter");
    let body = serde_json::json!({
        "name": "柜台 Counter 1", "currency": "CNY", "tags": {"till": "counter-1"},
    });
    let answer = client
        .call(
            HttpMethod::Post,
            "/v1/codes",
            body.to_string().as_bytes(),
            Some(&format!("{reference}-code")),
        )
        .await?;
    if answer.status != 201 {
        bail!(
            "code not made: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let code: Value = serde_json::from_slice(&answer.body)?;
    let url = text(&code, "/url").to_owned();
    let id = text(&code, "/id").to_owned();
    let poster = client
        .call(
            HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.svg"),
            b"",
            None,
        )
        .await?;
    if let Some(dir) = poster_path.parent() {
        moongate::private_fs::create_dir_all(dir)?;
    }
    moongate::private_fs::write(poster_path, &poster.body)
        .with_context(|| format!("writing {}", poster_path.display()))?;
    let png = client
        .call(
            HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.png"),
            b"",
            None,
        )
        .await?;
    let png_path = poster_path.with_extension("png");
    moongate::private_fs::write(&png_path, &png.body)
        .with_context(|| format!("writing {}", png_path.display()))?;
    println!(
        "   POST /v1/codes -> {id}; the QR holds {url}\n   printable poster: {} and {} (GET /v1/codes/{id}/poster.svg, poster.png)",
        tidy(poster_path).display(),
        tidy(&png_path).display()
    );
    let http = moongate::outbound::Outbound::new(Duration::from_secs(2), Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    const DESKTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0";
    let form = |url: String, body: &str| shopper(DESKTOP, HttpMethod::Post, &url, None, body);
    let scanned = http.send(&form(url.clone(), "amount=16.80")).await?;
    let cashier = header(&scanned, "location")?;
    println!("   a shopper scans it and types ¥16.80 -> a checkout's cashier page");
    http.send(&form(format!("{cashier}/pay"), "method=alipay_qr"))
        .await?;
    let payments = client
        .call(HttpMethod::Get, "/v1/payments?limit=1", b"", None)
        .await?;
    let payments: Value = serde_json::from_slice(&payments.body)?;
    let payment = text(&payments, "/data/0/id").to_owned();
    shopper_pays(alipay, &payment).await?;
    let paid = wait_status(client, &payment, "succeeded").await?;
    println!(
        "   paid with Alipay: {payment} ¥{} metadata.code_id={} till={} -> the shopper lands on the code's receipt",
        moongate_contract::Money::new(
            paid.pointer("/amount")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            moongate_contract::Currency::CNY
        )
        .to_decimal_string(),
        text(&paid, "/metadata/code_id"),
        text(&paid, "/metadata/till")
    );
    in_alipay(&http, client, alipay, &url).await
}

/// A shopper's browser request: its user agent, the cookie it holds, a form body for a POST.
fn shopper(
    agent: &str,
    method: HttpMethod,
    url: &str,
    cookie: Option<&str>,
    body: &str,
) -> moongate_contract::HttpRequest {
    let mut headers = vec![("user-agent".to_owned(), agent.to_owned())];
    if method == HttpMethod::Post {
        headers.push((
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        ));
    }
    headers.extend(cookie.map(|c| ("cookie".to_owned(), c.to_owned())));
    moongate_contract::HttpRequest {
        method,
        url: url.to_owned(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// The same code scanned inside the Alipay app (its user agent): the cashier asks Alipay who
/// pays (`auth_base`, silent: the sandbox's page answers at once), pays with `alipay_jsapi`,
/// and the sandbox's in-app sheet stands in for `AlipayJSBridge` `tradePay`.
async fn in_alipay(
    http: &moongate::outbound::Outbound,
    client: &MerchantClient,
    alipay: SocketAddr,
    code_url: &str,
) -> anyhow::Result<()> {
    const IN_ALIPAY: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 AlipayClient/10.5.36.6000 Language/zh-Hans";
    let request = |method, url: &str, cookie: Option<&str>, body: &str| {
        shopper(IN_ALIPAY, method, url, cookie, body)
    };
    let scanned = http
        .send(&request(HttpMethod::Post, code_url, None, "amount=9.90"))
        .await?;
    let cashier = header(&scanned, "location")?;
    let asked = http
        .send(&request(HttpMethod::Get, &cashier, None, ""))
        .await?;
    let authorize = header(&asked, "location")?;
    let cookie = header(&asked, "set-cookie")?;
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    let back = http
        .send(&request(HttpMethod::Get, &authorize, None, ""))
        .await?;
    let callback = header(&back, "location")?;
    http.send(&request(HttpMethod::Get, &callback, Some(&cookie), ""))
        .await?;
    http.send(&request(
        HttpMethod::Post,
        &format!("{cashier}/pay"),
        None,
        "method=alipay_jsapi",
    ))
    .await?;
    let payments = client
        .call(HttpMethod::Get, "/v1/payments?limit=1", b"", None)
        .await?;
    let payments: Value = serde_json::from_slice(&payments.body)?;
    let payment = text(&payments, "/data/0/id").to_owned();
    let method = text(&payments, "/data/0/method").to_owned();
    if method != "alipay_jsapi" {
        bail!("inside Alipay the cashier paid with {method}, not alipay_jsapi");
    }
    let trade_no = text(&payments, "/data/0/next_action/trade_no").to_owned();
    let sheet = http
        .send(&request(
            HttpMethod::Get,
            &format!("http://{alipay}/sandbox/tradepay?tradeNO={trade_no}"),
            None,
            "",
        ))
        .await?;
    if sheet.status != 200 {
        bail!(
            "the sandbox's tradePay sheet refused: HTTP {}",
            sheet.status
        );
    }
    let paid = wait_status(client, &payment, "succeeded").await?;
    println!(
        "   scanned inside the Alipay app: Alipay's silent authorisation (auth_base) names the payer {}, \
         the cashier pays with alipay_jsapi (trade {trade_no}, AlipayJSBridge tradePay) -> {payment} ¥{} succeeded",
        text(&paid, "/payer/openid"),
        moongate_contract::Money::new(
            paid.pointer("/amount")
                .and_then(Value::as_i64)
                .unwrap_or_default(),
            moongate_contract::Currency::CNY
        )
        .to_decimal_string(),
    );
    Ok(())
}

/// Step 16: the finance team's view. The sandboxes are told it is tomorrow (providers only hand
/// out a day's bill once it is over), then each account's statement is downloaded, matched
/// against the ledger and written as JSON, CSV and HTML.
async fn reconciliation(
    gateway: &moongate::gateway::Gateway,
    sandboxes: [SocketAddr; 3],
    reports: &Path,
    admin: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let http = moongate::outbound::Outbound::new(Duration::from_secs(2), Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let now = gateway.now();
    println!(
        "16. Reconciliation of today (Beijing; UnionPay's clearing day turns at 23:00): each provider's daily statement against the ledger, each sub-merchant's its own"
    );
    let accounts = [
        (
            sandboxes[0],
            "demo_shop",
            "alipay_main",
            ProviderKind::Alipay,
        ),
        (
            sandboxes[1],
            "demo_shop",
            "wechat_main",
            ProviderKind::WechatPay,
        ),
        (
            sandboxes[2],
            "demo_shop",
            "unionpay_main",
            ProviderKind::UnionPay,
        ),
        (
            sandboxes[1],
            "demo_market",
            "wechat_sub",
            ProviderKind::WechatPay,
        ),
        (
            sandboxes[1],
            "demo_stall",
            "wechat_sub",
            ProviderKind::WechatPay,
        ),
        (
            sandboxes[0],
            "demo_stall",
            "alipay_isv",
            ProviderKind::Alipay,
        ),
    ];
    for (sandbox, merchant, account, kind) in accounts {
        // Each provider's own statement day of now, which the sandbox is told has ended.
        let today = moongate::registry::facts(kind)
            .wallet
            .statement_day
            .day_of(now);
        let tomorrow = today.next_day().unwrap_or(today);
        let request = moongate_contract::HttpRequest {
            method: HttpMethod::Post,
            url: format!("http://{sandbox}/sandbox/statement-clock"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::json!({ "today": crate::reconcile::run::format_day(tomorrow) })
                .to_string()
                .into_bytes(),
        };
        http.send(&request).await?;
        let request = crate::reconcile::run::RunRequest {
            merchant_id: merchant.to_owned(),
            account_id: account.to_owned(),
            day: today,
            source: crate::reconcile::run::Source::Download,
        };
        let report = crate::reconcile::run::reconcile(gateway, request, None).await?;
        let files = crate::reconcile::cli::write_reports(&report, reports)?;
        for line in crate::reconcile::cli::summary_text(&report).lines() {
            println!("   {line}");
        }
        if report.break_count > 0 {
            println!(
                "   (payments from earlier demo runs today are in the ledger file but not in this fresh sandbox: they show as missing_in_provider)"
            );
        }
        let [_, _, html] = files;
        println!("   HTML report: {}", tidy(&html).display());
        if let Some(admin) = admin {
            println!(
                "   also at http://{admin}/reconciliations/{}",
                report.run_id
            );
        }
    }
    Ok(())
}

/// A path as a person would write it: `fixtures/demo/../../moongate-demo/x` is
/// `moongate-demo/x` (lexically, so it works before the file exists).
fn tidy(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.iter().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_shown_tidy() {
        let shown = super::tidy(std::path::Path::new(
            "fixtures/demo/../../moongate-demo/reports/x.html",
        ));
        assert_eq!(
            shown,
            std::path::PathBuf::from("moongate-demo/reports/x.html")
        );
        let kept = super::tidy(std::path::Path::new("../up/./here"));
        assert_eq!(kept, std::path::PathBuf::from("../up/here"));
    }
}
