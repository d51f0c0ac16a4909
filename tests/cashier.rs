#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The hosted cashier over plain HTTP (the browser journeys are in `tests/browser.rs`):
//! checkouts through the signed API, the page's states, wallet choice and switching, the
//! guards against paying twice, in-app browsers, expiry and the page's security headers.

mod common;

use std::time::Duration;

use common::{DESKTOP_UA, Harness, PHONE_UA, WECHAT_UA, header};
use moongate_contract::HttpMethod;
use serde_json::{Value, json};
use time::OffsetDateTime;

on_both_ledgers!(
    return_hosts_stop_the_cashier_from_sending_shoppers_elsewhere,
    a_checkout_is_paid_by_qr_and_sends_the_shopper_back,
    switching_wallets_closes_the_first_payment_at_its_provider,
    double_clicks_and_racing_tabs_open_one_payment,
    in_app_and_phone_browsers_get_their_own_wallets,
    expired_and_unknown_links_open_nothing,
    a_closed_payment_lets_the_shopper_choose_again,
    checkout_requests_are_validated,
    an_order_the_wallet_cannot_take_is_refused_with_a_notice,
    the_ledger_keeps_no_cashier_link,
);

fn order(reference: &str) -> Value {
    json!({
        "amount": 8800,
        "currency": "CNY",
        "merchant_reference": reference,
        "description": "明前龙井 Longjing tea",
        "return_url": "https://shop.example/orders/1",
        "cancel_url": "https://shop.example/cart",
    })
}

fn text(response: &moongate_contract::HttpResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

/// The value of `attribute` in the tag holding `marker` (after it).
fn attr_after(html: &str, marker: &str, attribute: &str) -> Option<String> {
    let (_, after) = html.split_once(marker)?;
    let (tag, _) = after.split_once('>')?;
    let (_, rest) = tag.split_once(&format!("{attribute}=\""))?;
    let (value, _) = rest.split_once('"')?;
    Some(value.to_owned())
}

/// The value of `attribute` on the element with `id="state"`.
fn state_attr(html: &str, attribute: &str) -> Option<String> {
    attr_after(html, "id=\"state\"", attribute)
}

fn state(html: &str) -> String {
    state_attr(html, "data-state").unwrap_or_default()
}

/// The code behind the sandbox wallet link (what the QR code holds).
fn sandbox_code(html: &str) -> String {
    let url = attr_after(html, "id=\"sandbox-wallet\"", "href")
        .expect("a sandbox wallet link")
        .replace("&amp;", "&");
    let query = url.split_once('?').unwrap().1.to_owned();
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned()
}

async fn get_checkout(h: &Harness, id: &str) -> Value {
    let (status, checkout) = h.get(&h.shop_a, &format!("/v1/checkouts/{id}")).await;
    assert_eq!(status, 200, "{checkout}");
    checkout
}

async fn wait_page_state(h: &Harness, url: &str, want: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = text(&h.browse(url, DESKTOP_UA).await);
        if state(&last) == want {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cashier never showed {want}: {last}");
}

async fn a_checkout_is_paid_by_qr_and_sends_the_shopper_back(h: Harness) {
    let (status, checkout) = h.checkout(order("tea-1"), "co-1").await;
    assert_eq!(status, 201, "{checkout}");
    assert_eq!(checkout["object"], "checkout");
    assert_eq!(checkout["status"], "open");
    assert_eq!(checkout["payment"], Value::Null);
    let url = checkout["url"].as_str().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");

    // The same key gives the same checkout; a different key a different link.
    let (_, again) = h.checkout(order("tea-1"), "co-1").await;
    assert_eq!(again["url"], checkout["url"]);
    let (_, other) = h.checkout(order("tea-1"), "co-2").await;
    assert_ne!(other["url"], checkout["url"]);

    // The page: the order, the amount as shoppers read it, both wallets, no outside resource.
    let page = h.browse(&url, DESKTOP_UA).await;
    assert_eq!(page.status, 200);
    let html = text(&page);
    assert_eq!(state(&html), "choose");
    assert!(html.contains("¥88.00"), "{html}");
    assert!(html.contains("Shop A"));
    assert!(html.contains("value=\"alipay_qr\""), "{html}");
    assert!(html.contains("value=\"wechat_native\""), "{html}");
    assert!(!html.contains("<script"), "no script without JSAPI");
    assert!(!html.contains("src=\"http"), "no outside resource");
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'none'"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(header(&page, "referrer-policy"), Some("no-referrer"));
    assert_eq!(header(&page, "cache-control"), Some("no-store"));

    // Choosing Alipay: back to the page, which shows the QR code and reloads itself.
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            DESKTOP_UA,
            &[("method", "alipay_qr")],
        )
        .await;
    assert_eq!(chosen.status, 303);
    assert!(header(&chosen, "location").unwrap().ends_with(token));
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    assert_eq!(state(&html), "pending", "{html}");
    assert_eq!(state_attr(&html, "data-method").unwrap(), "alipay_qr");
    assert!(html.contains("<svg role=\"img\""));
    assert!(html.contains("http-equiv=\"refresh\" content=\"3\""));
    let payment_id = state_attr(&html, "data-payment").unwrap();
    let (_, payment) = h
        .get(&h.shop_a, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["metadata"]["checkout_id"], checkout["id"]);
    assert_eq!(payment["channel"], "web");
    let code = sandbox_code(&html);
    assert_eq!(payment["next_action"]["qr_data"], code.as_str());

    // The shopper's phone scans and pays; the notification makes the page say so.
    let wallet = format!("http://{}/sandbox/wallet", h.sandbox_addr);
    let scanned = h.browse(&format!("{wallet}?code={code}"), PHONE_UA).await;
    assert_eq!(scanned.status, 200);
    assert!(text(&scanned).contains("88.00"));
    let paid = h.submit(&wallet, PHONE_UA, &[("code", &code)]).await;
    assert_eq!(paid.status, 200, "{}", text(&paid));
    let html = wait_page_state(&h, &url, "paid").await;
    assert!(
        html.contains("content=\"3;url=https://shop.example/orders/1\""),
        "{html}"
    );
    let checkout = get_checkout(&h, checkout["id"].as_str().unwrap()).await;
    assert_eq!(checkout["status"], "complete");
    assert_eq!(checkout["payment"], payment_id.as_str());
    assert_eq!(checkout["payment_status"], "succeeded");

    // The merchant heard it as a signed payment webhook carrying the checkout id.
    let mut found = false;
    for _ in 0..100 {
        found = h.webhooks.lock().unwrap().iter().any(|d| {
            let event: Value = serde_json::from_str(&d.body).unwrap();
            event["type"] == "payment.succeeded"
                && event["data"]["object"]["metadata"]["checkout_id"] == checkout["id"]
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "payment.succeeded webhook with the checkout id");

    // Once paid, another choice opens nothing.
    let again = h
        .submit(
            &format!("{url}/pay"),
            DESKTOP_UA,
            &[("method", "wechat_native")],
        )
        .await;
    assert_eq!(again.status, 303);
    let payments = h
        .gateway
        .gateway
        .store
        .checkout_payments(checkout["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
}

async fn switching_wallets_closes_the_first_payment_at_its_provider(h: Harness) {
    let (_, checkout) = h.checkout(order("tea-2"), "co-switch").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    h.submit(
        &format!("{url}/pay"),
        DESKTOP_UA,
        &[("method", "alipay_qr")],
    )
    .await;
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    let first = state_attr(&html, "data-payment").unwrap();
    let alipay_code = sandbox_code(&html);
    // The page offers the other wallet beside the QR code.
    assert!(html.contains("value=\"wechat_native\""));
    assert!(!html.contains("value=\"alipay_qr\""));

    let switched = h
        .submit(
            &format!("{url}/pay"),
            DESKTOP_UA,
            &[("method", "wechat_native")],
        )
        .await;
    assert_eq!(switched.status, 303);
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    assert_eq!(state_attr(&html, "data-method").unwrap(), "wechat_native");
    let second = state_attr(&html, "data-payment").unwrap();
    assert_ne!(first, second);
    let wechat_code = sandbox_code(&html);
    assert!(wechat_code.starts_with("weixin://wxpay/bizpayurl?pr="));

    // The Alipay payment is closed (Alipay answers TRADE_NOT_EXIST for a QR never scanned).
    let (_, old) = h.get(&h.shop_a, &format!("/v1/payments/{first}")).await;
    assert_eq!(old["status"], "canceled", "{old}");
    let checkout_id = checkout["id"].as_str().unwrap().to_owned();
    let checkout = get_checkout(&h, &checkout_id).await;
    assert_eq!(checkout["payment"], second.as_str());
    assert_eq!(checkout["payment_status"], "requires_action");

    // Alipay cannot close a QR code before it is scanned, so a shopper may still pay the old
    // one: that money is recorded (the checkout is paid by it), and the WeChat Pay order the
    // shopper switched to is closed so it cannot be paid as well.
    let wallet = format!("http://{}/sandbox/wallet", h.sandbox_addr);
    let late = h.submit(&wallet, PHONE_UA, &[("code", &alipay_code)]).await;
    assert_eq!(late.status, 200, "{}", text(&late));
    let html = wait_page_state(&h, &url, "paid").await;
    assert_eq!(state_attr(&html, "data-payment").unwrap(), first);
    h.wait_for(&h.shop_a, &second, "canceled").await;
    let wechat_wallet = format!("http://{}/sandbox/wallet", h.wechat_addr);
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    assert_eq!(state(&html), "paid");
    let refused = h
        .submit(&wechat_wallet, PHONE_UA, &[("code", &wechat_code)])
        .await;
    assert_eq!(
        refused.status, 409,
        "the closed WeChat Pay order cannot be paid"
    );
    let checkout = get_checkout(&h, &checkout_id).await;
    assert_eq!(checkout["status"], "complete");
    assert_eq!(checkout["payment"], first.as_str());
}

async fn double_clicks_and_racing_tabs_open_one_payment(h: Harness) {
    let (_, checkout) = h.checkout(order("tea-3"), "co-race").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    let calls_before = h.provider_calls(h.sandbox_addr).await;
    let pay = format!("{url}/pay");
    let click = || h.submit(&pay, DESKTOP_UA, &[("method", "alipay_qr")]);
    let answers = tokio::join!(click(), click(), click(), click(), click(), click());
    for answer in [
        answers.0, answers.1, answers.2, answers.3, answers.4, answers.5,
    ] {
        assert_eq!(answer.status, 303);
    }
    let payments = h
        .gateway
        .gateway
        .store
        .checkout_payments(checkout["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(payments.len(), 1, "one payment for six clicks");
    assert_eq!(
        h.provider_calls(h.sandbox_addr).await - calls_before,
        1,
        "one provider order"
    );
}

async fn in_app_and_phone_browsers_get_their_own_wallets(h: Harness) {
    // Inside WeChat without an openid: WeChat Pay only (a QR it recognises on a long press),
    // and a hint to open the page elsewhere for Alipay.
    let (_, checkout) = h.checkout(order("tea-4"), "co-wechat").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    let html = text(&h.browse(&url, WECHAT_UA).await);
    assert!(html.contains("value=\"wechat_native\""), "{html}");
    assert!(!html.contains("value=\"alipay"), "{html}");
    assert!(html.contains("open this page in your browser"));
    // A method this browser cannot use is refused with a notice, and nothing is created.
    let refused = h
        .submit(&format!("{url}/pay"), WECHAT_UA, &[("method", "alipay_qr")])
        .await;
    assert!(
        header(&refused, "location")
            .unwrap()
            .ends_with("?n=method_unavailable")
    );
    let notice = text(
        &h.browse(&format!("{url}?n=method_unavailable"), WECHAT_UA)
            .await,
    );
    assert!(notice.contains("id=\"notice\""));

    // With the shopper's openid: JSAPI, run by the page's one nonce-bearing script.
    let mut body = order("tea-5");
    body["payer"] = json!({"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"});
    let (status, checkout) = h.checkout(body, "co-jsapi").await;
    assert_eq!(status, 201, "{checkout}");
    let url = checkout["url"].as_str().unwrap().to_owned();
    let html = text(&h.browse(&url, WECHAT_UA).await);
    assert!(html.contains("value=\"wechat_jsapi\""), "{html}");
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            WECHAT_UA,
            &[("method", "wechat_jsapi")],
        )
        .await;
    assert_eq!(chosen.status, 303);
    let page = h.browse(&url, WECHAT_UA).await;
    let html = text(&page);
    assert_eq!(state_attr(&html, "data-method").unwrap(), "wechat_jsapi");
    assert!(html.contains("getBrandWCPayRequest"));
    assert!(html.contains("\"package\":\"prepay_id="), "{html}");
    let csp = header(&page, "content-security-policy").unwrap();
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));
    assert!(
        !html.contains("http-equiv=\"refresh\""),
        "the bridge reloads itself"
    );

    // A phone's browser: Alipay WAP, straight to Alipay's page with the cashier as return URL.
    let (_, checkout) = h.checkout(order("tea-6"), "co-phone").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    let html = text(&h.browse(&url, PHONE_UA).await);
    assert!(html.contains("value=\"alipay_wap\""), "{html}");
    assert!(html.contains("value=\"wechat_h5\""), "{html}");
    let chosen = h
        .submit(&format!("{url}/pay"), PHONE_UA, &[("method", "alipay_wap")])
        .await;
    assert_eq!(chosen.status, 303);
    let location = header(&chosen, "location").unwrap();
    assert!(
        location.starts_with(&format!("http://{}/gateway.do?", h.sandbox_addr)),
        "{location}"
    );
    let (_, payment) = h
        .get(
            &h.shop_a,
            &format!("/v1/checkouts/{}", checkout["id"].as_str().unwrap()),
        )
        .await;
    let (_, payment) = h
        .get(
            &h.shop_a,
            &format!("/v1/payments/{}", payment["payment"].as_str().unwrap()),
        )
        .await;
    // The wallet brings the shopper back through a path naming the checkout, not its token.
    let query = location.split_once('?').unwrap().1;
    let return_url = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "return_url")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(
        return_url,
        format!(
            "{}/cashier/return/{}",
            h.shop_a.base_url,
            checkout["id"].as_str().unwrap()
        )
    );
    assert_eq!(
        payment["return_url"],
        Value::Null,
        "the payment keeps no link"
    );
    assert_eq!(payment["channel"], "mobile_web");

    // WeChat Pay H5 from a phone: the shopper's IP is the connection's.
    let (_, checkout) = h.checkout(order("tea-7"), "co-h5").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    let chosen = h
        .submit(&format!("{url}/pay"), PHONE_UA, &[("method", "wechat_h5")])
        .await;
    assert_eq!(chosen.status, 303, "{}", text(&chosen));
    let location = header(&chosen, "location").unwrap();
    assert!(location.contains("/sandbox/h5?prepay_id="), "{location}");
    let checkout = get_checkout(&h, checkout["id"].as_str().unwrap()).await;
    let (_, payment) = h
        .get(
            &h.shop_a,
            &format!("/v1/payments/{}", checkout["payment"].as_str().unwrap()),
        )
        .await;
    assert_eq!(payment["payer"]["client_ip"], "127.0.0.1");

    // UnionPay from a phone (or inside 云闪付): its gateway page, reached by a signed form the
    // page posts; UnionPay brings the shopper back with a POST, which lands on the shop.
    let (_, checkout) = h.checkout(order("tea-8"), "co-unionpay").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    let in_app = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Mobile Safari/537.36 (com.unionpay.chsp) (cordova 7.0.0) (UnionPay/1.0 CloudPay)";
    let html = text(&h.browse(&url, in_app).await);
    assert!(html.contains("value=\"unionpay_wap\""), "{html}");
    assert!(!html.contains("value=\"alipay") && !html.contains("value=\"wechat"));
    let html = text(&h.browse(&url, PHONE_UA).await);
    assert!(html.contains("value=\"unionpay_wap\""), "{html}");
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            PHONE_UA,
            &[("method", "unionpay_wap")],
        )
        .await;
    assert_eq!(chosen.status, 303, "{}", text(&chosen));
    let html = text(&h.browse(&url, PHONE_UA).await);
    assert_eq!(state_attr(&html, "data-method").unwrap(), "unionpay_wap");
    let action = attr_after(&html, "id=\"wallet-form\"", "action").unwrap();
    assert_eq!(
        action,
        format!("http://{}/gateway/api/frontTransReq.do", h.unionpay_addr)
    );
    let form: Vec<(String, String)> = html
        .split("<input type=\"hidden\" ")
        .skip(1)
        .map(|input| {
            let value = |name: &str| attr_after(&format!("<{input}"), "<", name).unwrap();
            (value("name"), value("value").replace("&amp;", "&"))
        })
        .collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let checkout_id = checkout["id"].as_str().unwrap();
    let front_url = format!("{}/cashier/return/{checkout_id}", h.shop_a.base_url);
    assert_eq!(field("frontUrl"), front_url);
    assert_eq!(field("channelType"), "08");
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let page = h.submit(&action, PHONE_UA, &pairs).await;
    assert_eq!(page.status, 200, "{}", text(&page));
    let order_id = field("orderId");
    let wallet = format!("http://{}/sandbox/wallet", h.unionpay_addr);
    let code = format!("front:{order_id}");
    let back = h.submit(&wallet, PHONE_UA, &[("code", &code)]).await;
    let back = text(&back);
    assert!(back.contains(&format!("action=\"{front_url}\"")), "{back}");
    // The signed POST back: without the cashier's cookie (a cross-site POST carries none),
    // the shopper goes to the shop, which asks for the status.
    let returned = h
        .submit(&front_url, PHONE_UA, &[("orderId", &order_id)])
        .await;
    assert_eq!(returned.status, 303, "{}", text(&returned));
    assert_eq!(
        header(&returned, "location"),
        Some("https://shop.example/orders/1")
    );
}

async fn expired_and_unknown_links_open_nothing(h: Harness) {
    let now = OffsetDateTime::now_utc();
    let token = "A".repeat(43);
    let checkout = moongate::cashier::Checkout {
        id: "co_EXPIRED".to_owned(),
        token_hash: moongate::cashier::key::token_hash(&token),
        merchant_id: "shop_a".to_owned(),
        amount: 100,
        currency: moongate_contract::Currency::CNY,
        merchant_reference: "old".to_owned(),
        description: "An old order".to_owned(),
        return_url: "https://shop.example/done".to_owned(),
        cancel_url: Some("https://shop.example/cart".to_owned()),
        methods: Vec::new(),
        openid: None,
        metadata: serde_json::Map::new(),
        expires_at: now - time::Duration::seconds(1),
        created_at: now - time::Duration::minutes(31),
        payment_id: None,
        legacy_token: None,
    };
    let claim = moongate::store::IdemClaim {
        merchant_id: "shop_a".to_owned(),
        key: "old".to_owned(),
        request_hash: "x".to_owned(),
        now,
        nonce: None,
    };
    h.gateway
        .gateway
        .store
        .begin_checkout(claim, checkout)
        .await
        .unwrap();
    let base = h.shop_a.base_url.clone();
    let url = format!("{base}/cashier/{token}");
    let page = h.browse(&url, DESKTOP_UA).await;
    let html = text(&page);
    assert_eq!(state(&html), "expired", "{html}");
    assert!(html.contains("href=\"https://shop.example/cart\""));
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            DESKTOP_UA,
            &[("method", "alipay_qr")],
        )
        .await;
    assert_eq!(chosen.status, 303);
    let payments = h
        .gateway
        .gateway
        .store
        .checkout_payments("co_EXPIRED")
        .await
        .unwrap();
    assert!(payments.is_empty());
    let (_, json) = h.get(&h.shop_a, "/v1/checkouts/co_EXPIRED").await;
    assert_eq!(json["status"], "expired");

    for bad in [
        format!("{base}/cashier/{}", "B".repeat(43)),
        format!("{base}/cashier/short"),
        format!("{base}/cashier/{}%3Cscript%3E", "A".repeat(40)),
    ] {
        let page = h.browse(&bad, DESKTOP_UA).await;
        assert_eq!(page.status, 404, "{bad}");
        assert_eq!(state(&text(&page)), "missing");
    }
    // Another merchant cannot read the checkout.
    let (status, _) = h.get(&h.shop_b, "/v1/checkouts/co_EXPIRED").await;
    assert_eq!(status, 404);
}

async fn a_closed_payment_lets_the_shopper_choose_again(h: Harness) {
    let (_, checkout) = h.checkout(order("tea-8"), "co-closed").await;
    let url = checkout["url"].as_str().unwrap().to_owned();
    h.submit(
        &format!("{url}/pay"),
        DESKTOP_UA,
        &[("method", "alipay_qr")],
    )
    .await;
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    let first = state_attr(&html, "data-payment").unwrap();
    // The merchant closes the payment (say, the stock ran out and came back).
    let (status, closed) = h
        .post(
            &h.shop_a,
            &format!("/v1/payments/{first}/cancel"),
            "",
            "cancel-1",
        )
        .await;
    assert_eq!(status, 200, "{closed}");
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    assert_eq!(state(&html), "canceled", "{html}");
    assert!(html.contains("The payment was closed"));
    assert!(html.contains("value=\"alipay_qr\""), "choose again");
    h.submit(
        &format!("{url}/pay"),
        DESKTOP_UA,
        &[("method", "alipay_qr")],
    )
    .await;
    let html = text(&h.browse(&url, DESKTOP_UA).await);
    assert_eq!(state(&html), "pending");
    assert_ne!(state_attr(&html, "data-payment").unwrap(), first);
}

async fn return_hosts_stop_the_cashier_from_sending_shoppers_elsewhere(h: Harness) {
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    let anchor = "[merchants.shop_a]\nname = \"Shop A\"\n";
    assert!(text.contains(anchor));
    let listed = text.replacen(
        anchor,
        &format!("{anchor}return_hosts = [\"shop.example\"]\n"),
        1,
    );
    std::fs::write(&h.config_path, listed).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    let (status, checkout) = h.checkout(order("rh-1"), "rh-1").await;
    assert_eq!(status, 201, "{checkout}");
    let mut elsewhere = order("rh-2");
    elsewhere["return_url"] = json!("https://evil.example/phish");
    let (status, refused) = h.checkout(elsewhere, "rh-2").await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "return_host_not_allowed");
    assert_eq!(refused["error"]["param"], "return_url");
    let mut cancel = order("rh-3");
    cancel["cancel_url"] = json!("https://shop.example.evil.example/");
    let (status, refused) = h.checkout(cancel, "rh-3").await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "cancel_url");
    // Payments too; a redirect wallet the cashier starts returns to Moongate's own page.
    let (status, payment) = h
        .create_with(
            &h.shop_a,
            json!({"amount": 100, "currency": "CNY", "method": "alipay_web",
                   "merchant_reference": "rh-4", "description": "Tea",
                   "return_url": "https://evil.example/"}),
            "rh-4",
        )
        .await;
    assert_eq!(status, 400, "{payment}");
    assert_eq!(payment["error"]["code"], "return_host_not_allowed");
    let url = checkout["url"].as_str().unwrap();
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            common::PHONE_UA,
            &[("method", "alipay_wap")],
        )
        .await;
    assert_eq!(
        chosen.status,
        303,
        "{}",
        String::from_utf8_lossy(&chosen.body)
    );
    // To the wallet's cashier, not back to the page with a notice.
    let location = header(&chosen, "location").unwrap_or_default();
    assert!(location.contains("gateway.do"), "sent to {location}");
}

async fn checkout_requests_are_validated(h: Harness) {
    let cases = [
        (json!({"return_url": Value::Null}), "parameter_invalid"),
        (
            json!({"return_url": "javascript:alert(1)"}),
            "parameter_invalid",
        ),
        (json!({"cancel_url": "ftp://x"}), "parameter_invalid"),
        (json!({"amount": 0}), "parameter_invalid"),
        (json!({"expires_in_seconds": 30}), "parameter_invalid"),
        (
            json!({"methods": ["wechat_payment_code"]}),
            "parameter_invalid",
        ),
        (json!({"methods": ["bitcoin"]}), "parameter_invalid"),
        (json!({"currency": "USD"}), "method_unsupported"),
        (
            json!({"metadata": {"checkout_id": "x"}}),
            "parameter_invalid",
        ),
        (json!({"payer": {"openid": "bad id"}}), "parameter_invalid"),
        (json!({"surprise": true}), "parameter_unknown"),
    ];
    for (i, (patch, code)) in cases.into_iter().enumerate() {
        let mut body = order("tea-bad");
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, error) = h.checkout(body.clone(), &format!("bad-{i}")).await;
        assert_eq!(status, 400, "{body} → {error}");
        assert_eq!(error["error"]["code"], code, "{body} → {error}");
    }
    // A checkout limited to one method offers only that one.
    let mut body = order("tea-9");
    body["methods"] = json!(["wechat_native"]);
    let (status, checkout) = h.checkout(body, "co-one").await;
    assert_eq!(status, 201, "{checkout}");
    let html = text(
        &h.browse(checkout["url"].as_str().unwrap(), DESKTOP_UA)
            .await,
    );
    assert!(html.contains("value=\"wechat_native\""));
    assert!(!html.contains("value=\"alipay_qr\""));
    // Unsigned calls are refused.
    let unsigned = h
        .http
        .send(&moongate_contract::HttpRequest {
            method: HttpMethod::Post,
            url: format!("{}/v1/checkouts", h.shop_a.base_url),
            headers: vec![("content-type".into(), "application/json".into())],
            body: order("x").to_string().into_bytes(),
        })
        .await
        .unwrap();
    assert_eq!(unsigned.status, 401);
}

async fn an_order_the_wallet_cannot_take_is_refused_with_a_notice(h: Harness) {
    // Above Alipay's ceiling of 100,000,000 yuan: the order cannot be made.
    let mut body = order("tea-huge");
    body["amount"] = json!(10_000_000_001_i64);
    body["methods"] = json!(["alipay_qr"]);
    let (status, checkout) = h.checkout(body, "co-huge").await;
    assert_eq!(status, 201, "{checkout}");
    let url = checkout["url"].as_str().unwrap().to_owned();
    let calls = h.provider_calls(h.sandbox_addr).await;
    let chosen = h
        .submit(
            &format!("{url}/pay"),
            DESKTOP_UA,
            &[("method", "alipay_qr")],
        )
        .await;
    let location = header(&chosen, "location").unwrap().to_owned();
    assert!(location.ends_with("?n=refused"), "{location}");
    let html = text(
        &h.browse(&format!("{}{location}", h.shop_a.base_url), DESKTOP_UA)
            .await,
    );
    assert_eq!(state(&html), "choose");
    assert!(html.contains("The wallet refused this payment"));
    assert_eq!(
        h.provider_calls(h.sandbox_addr).await,
        calls,
        "nothing sent"
    );
    let payments = h
        .gateway
        .gateway
        .store
        .checkout_payments(checkout["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(payments.is_empty(), "nothing stored");
}

/// Every value in the ledger, as text (SQLite: the file and its WAL; PostgreSQL: each row).
async fn ledger_text(h: &Harness) -> String {
    match &h.schema {
        None => {
            let dir = h.config_path.parent().unwrap();
            let mut all = Vec::new();
            for name in ["ledger.db", "ledger.db-wal"] {
                if let Ok(bytes) = std::fs::read(dir.join(name)) {
                    all.extend(bytes);
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        }
        Some(schema) => {
            let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema()",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut all = String::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                all.extend(rows);
            }
            all
        }
    }
}

// Issue 25, finding 8: the ledger keeps a hash of the cashier token, never the token; the link
// is derived again for the API, and a redirect wallet brings the shopper back through a path
// that names the checkout only (the browser that opened the page finds it again by a cookie).
async fn the_ledger_keeps_no_cashier_link(h: Harness) {
    let (status, checkout) = h.checkout(order("tea-9"), "co-hash").await;
    assert_eq!(status, 201, "{checkout}");
    let id = checkout["id"].as_str().unwrap().to_owned();
    let url = checkout["url"].as_str().unwrap().to_owned();
    let token = url.rsplit('/').next().unwrap().to_owned();
    let (_, again) = h.checkout(order("tea-9"), "co-hash").await;
    assert_eq!(again["url"], url.as_str(), "a replay shows the same link");
    assert_eq!(get_checkout(&h, &id).await["url"], url.as_str());

    let page = h.browse(&url, PHONE_UA).await;
    assert_eq!(page.status, 200);
    let cookie = header(&page, "set-cookie").unwrap().to_owned();
    assert!(
        cookie.contains(&format!("Path=/cashier/return/{id};")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let chosen = h
        .submit(&format!("{url}/pay"), PHONE_UA, &[("method", "alipay_wap")])
        .await;
    assert_eq!(chosen.status, 303);
    assert!(ledger_text(&h).await.contains(&id));
    assert!(
        !ledger_text(&h).await.contains(&token),
        "the ledger holds the cashier token"
    );

    // Back from the wallet in the same browser: the page again.
    let back = format!("{}/cashier/return/{id}", h.shop_a.base_url);
    let get = |cookie: Option<String>| {
        let mut headers = vec![("user-agent".to_owned(), PHONE_UA.to_owned())];
        headers.extend(cookie.map(|c| ("cookie".to_owned(), c)));
        moongate_contract::HttpRequest {
            method: HttpMethod::Get,
            url: back.clone(),
            headers,
            body: Vec::new(),
        }
    };
    let pair = cookie.split(';').next().unwrap().to_owned();
    let returned = h
        .http
        .send(&get(Some(format!("a=b; {pair}"))))
        .await
        .unwrap();
    assert_eq!(returned.status, 303);
    assert_eq!(
        header(&returned, "location"),
        Some(format!("/cashier/{token}").as_str())
    );
    // Another browser, or a forged cookie: to the shop (a payment is under way: its return URL).
    for cookie in [None, Some(format!("moongate_cashier={}", "A".repeat(43)))] {
        let returned = h.http.send(&get(cookie)).await.unwrap();
        assert_eq!(returned.status, 303);
        assert_eq!(
            header(&returned, "location"),
            Some("https://shop.example/orders/1")
        );
    }
    let unknown = format!("{}/cashier/return/co_NOSUCH", h.shop_a.base_url);
    assert_eq!(h.browse(&unknown, PHONE_UA).await.status, 404);
}
