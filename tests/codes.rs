#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Static payment codes (聚合码): a merchant makes a code for a till; a shopper opens its URL,
//! types the amount, is sent to a checkout's cashier page, pays, and lands on the code's
//! receipt; the payment carries the code's id and tags. A disabled code takes no payment; a
//! code's token opens nothing else.

mod common;

use common::{DESKTOP_UA, Harness, header};
use moongate_contract::HttpMethod;
use serde_json::{Value, json};

on_both_ledgers!(a_till_code_takes_a_typed_amount_and_a_disabled_one_takes_none);

fn text(response: &moongate_contract::HttpResponse) -> String {
    String::from_utf8(response.body.clone()).unwrap()
}

/// The value of `attribute` in the tag with `id="state"`.
fn state_attr(html: &str, attribute: &str) -> Option<String> {
    let (_, after) = html.split_once("id=\"state\"")?;
    let (tag, _) = after.split_once('>')?;
    let (_, rest) = tag.split_once(&format!("{attribute}=\""))?;
    Some(rest.split_once('"')?.0.to_owned())
}

async fn a_till_code_takes_a_typed_amount_and_a_disabled_one_takes_none(h: Harness) {
    let till = json!({
        "name": "Till 2 · 二号收银台", "currency": "CNY", "methods": ["alipay_qr", "wechat_native"],
        "tags": {"store": "jingan", "till": "2"},
    });
    let (status, code) = h
        .post(&h.shop_a, "/v1/codes", &till.to_string(), "code-1")
        .await;
    assert_eq!(status, 201, "{code}");
    assert_eq!(
        (code["object"].as_str(), code["status"].as_str()),
        (Some("code"), Some("active"))
    );
    assert_eq!(code["amount"], Value::Null);
    let url = code["url"].as_str().unwrap().to_owned();
    let token = url
        .strip_prefix(&format!("http://{}/c/", h.gateway.addr))
        .unwrap();
    assert_eq!(token.len(), 43, "256 bits, base64url");
    let id = code["id"].as_str().unwrap().to_owned();
    // A retry gets the same code and its URL; reads and the list agree.
    let (status, again) = h
        .post(&h.shop_a, "/v1/codes", &till.to_string(), "code-1")
        .await;
    assert_eq!(
        (status, &again["id"], &again["url"]),
        (201, &code["id"], &code["url"])
    );
    let (_, read) = h.get(&h.shop_a, &format!("/v1/codes/{id}")).await;
    assert_eq!(read, code);
    let (_, list) = h.get(&h.shop_a, "/v1/codes?limit=5").await;
    assert_eq!(list["data"][0]["id"], code["id"]);
    // Another merchant does not see it; bad codes are refused with their parameter.
    let (status, _) = h.get(&h.shop_b, &format!("/v1/codes/{id}")).await;
    assert_eq!(status, 404);
    for (body, param) in [
        (json!({"name": "", "currency": "CNY"}), "name"),
        (json!({"name": "x", "currency": "cny"}), "currency"),
        (
            json!({"name": "x", "currency": "CNY", "amount": 0}),
            "amount",
        ),
        (
            json!({"name": "x", "currency": "CNY", "methods": ["cash"]}),
            "methods",
        ),
        (
            json!({"name": "x", "currency": "CNY", "tags": {"code_id": "y"}}),
            "tags",
        ),
        (
            json!({"name": "x", "currency": "CNY", "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let key = format!("bad-{param}");
        let (status, error) = h
            .post(&h.shop_a, "/v1/codes", &body.to_string(), &key)
            .await;
        assert_eq!(
            (status, error["error"]["param"].as_str()),
            (400, Some(param)),
            "{error}"
        );
    }

    // The poster: the names, and the code's URL is what it encodes.
    let poster = h
        .shop_a
        .call(
            HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.svg"),
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(poster.status, 200);
    assert_eq!(header(&poster, "content-type"), Some("image/svg+xml"));
    let svg = text(&poster);
    assert!(svg.contains("Shop A") && svg.contains("Till 2"), "{svg}");
    assert!(
        svg.contains("<svg x=\"60\" y=\"150\""),
        "the QR inside the poster"
    );
    // The same poster as a PNG at 300 dpi: A6 is 1240 × 1748 pixels.
    let png = h
        .shop_a
        .call(
            HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.png"),
            b"",
            None,
        )
        .await
        .unwrap();
    assert_eq!(png.status, 200);
    assert_eq!(header(&png, "content-type"), Some("image/png"));
    assert_eq!(png.body.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
    let dimension = |at: usize| u32::from_be_bytes(png.body[at..at + 4].try_into().unwrap());
    assert_eq!((dimension(16), dimension(20)), (1240, 1748));
    let (status, _) = h
        .shop_b
        .call(
            HttpMethod::Get,
            &format!("/v1/codes/{id}/poster.png"),
            b"",
            None,
        )
        .await
        .map(|r| (r.status, ()))
        .unwrap();
    assert_eq!(status, 404, "another merchant's code");

    // The shopper scans: a page asking the amount (opening it creates nothing).
    let page = h.browse(&url, DESKTOP_UA).await;
    assert_eq!(page.status, 200);
    let html = text(&page);
    assert!(
        html.contains("name=\"amount\"") && html.contains("Shop A"),
        "{html}"
    );
    assert_eq!(header(&page, "cache-control"), Some("no-store"));
    let refused = h.submit(&url, DESKTOP_UA, &[("amount", "12.345")]).await;
    assert_eq!(refused.status, 422);
    assert!(text(&refused).contains("id=\"notice\""));
    let refused = h.submit(&url, DESKTOP_UA, &[("amount", "0")]).await;
    assert_eq!(refused.status, 422);
    // 12.50 yuan: on to a checkout's cashier page.
    let scanned = h.submit(&url, DESKTOP_UA, &[("amount", "12.50")]).await;
    assert_eq!(scanned.status, 303, "{}", text(&scanned));
    let cashier = header(&scanned, "location").unwrap().to_owned();
    assert!(cashier.contains("/cashier/"), "{cashier}");
    let page = text(&h.browse(&cashier, DESKTOP_UA).await);
    assert!(page.contains("¥12.50"), "{page}");
    let chosen = h
        .submit(
            &format!("{cashier}/pay"),
            DESKTOP_UA,
            &[("method", "alipay_qr")],
        )
        .await;
    assert_eq!(chosen.status, 303);
    let page = text(&h.browse(&cashier, DESKTOP_UA).await);
    let payment_id = state_attr(&page, "data-payment").unwrap();
    let (_, payment) = h
        .get(&h.shop_a, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["amount"], 1250);
    assert_eq!(payment["metadata"]["code_id"], code["id"]);
    assert_eq!(payment["metadata"]["store"], "jingan");
    assert_eq!(payment["metadata"]["till"], "2");
    assert_eq!(payment["description"], "Till 2 · 二号收银台");
    let checkout_id = payment["metadata"]["checkout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Before it is paid the receipt says so; once paid, it shows the payment.
    let receipt = format!("{url}?receipt={checkout_id}");
    let before = text(&h.browse(&receipt, DESKTOP_UA).await);
    assert_eq!(
        state_attr(&before, "data-state").as_deref(),
        Some("open"),
        "{before}"
    );
    let paid = h
        .sandbox("/sandbox/pay", json!({"out_trade_no": payment_id}))
        .await;
    assert_eq!(paid.status, 200);
    h.wait_for(&h.shop_a, &payment_id, "succeeded").await;
    let after = text(&h.browse(&receipt, DESKTOP_UA).await);
    assert_eq!(
        state_attr(&after, "data-state").as_deref(),
        Some("paid"),
        "{after}"
    );
    assert!(
        after.contains("¥12.50") && after.contains(&payment_id),
        "{after}"
    );
    // The cashier sends the shopper there once paid.
    let page = text(&h.browse(&cashier, DESKTOP_UA).await);
    assert!(page.contains(&format!("?receipt={checkout_id}")), "{page}");
    // Another merchant's checkout is no receipt of this code.
    let (_, other) = h
        .post(
            &h.shop_a,
            "/v1/checkouts",
            &json!({"amount": 100, "currency": "CNY", "merchant_reference": "o-1",
                    "description": "Tea", "return_url": "https://shop.example/done"})
            .to_string(),
            "co-other",
        )
        .await;
    let stranger = h
        .browse(
            &format!("{url}?receipt={}", other["id"].as_str().unwrap()),
            DESKTOP_UA,
        )
        .await;
    assert_eq!(stranger.status, 404);

    // A code's token opens no cashier, and a made-up token no code.
    let as_cashier = h
        .browse(
            &format!("http://{}/cashier/{token}", h.gateway.addr),
            DESKTOP_UA,
        )
        .await;
    assert_eq!(as_cashier.status, 404);
    let made_up = h
        .browse(
            &format!("http://{}/c/{}", h.gateway.addr, "A".repeat(43)),
            DESKTOP_UA,
        )
        .await;
    assert_eq!(made_up.status, 404);

    // Disabled: a page says so, and a scan takes nothing.
    let (status, disabled) = h
        .post(
            &h.shop_a,
            &format!("/v1/codes/{id}/disable"),
            "",
            "code-off",
        )
        .await;
    assert_eq!(
        (status, disabled["status"].as_str()),
        (200, Some("disabled")),
        "{disabled}"
    );
    assert!(disabled["disabled_at"].is_string());
    assert_eq!(disabled["url"], code["url"]);
    let page = h.browse(&url, DESKTOP_UA).await;
    assert_eq!(page.status, 410);
    assert_eq!(
        state_attr(&text(&page), "data-state").as_deref(),
        Some("disabled")
    );
    let scan = h.submit(&url, DESKTOP_UA, &[("amount", "5")]).await;
    assert_eq!(scan.status, 410);

    // A fixed-amount code: the page shows the amount and asks for nothing.
    let fixed = json!({"name": "Bubble tea", "currency": "CNY", "amount": 1800});
    let (status, code) = h
        .post(&h.shop_a, "/v1/codes", &fixed.to_string(), "code-2")
        .await;
    assert_eq!(status, 201, "{code}");
    let url = code["url"].as_str().unwrap();
    let html = text(&h.browse(url, DESKTOP_UA).await);
    assert!(
        html.contains("¥18.00") && !html.contains("name=\"amount\""),
        "{html}"
    );
    let scanned = h.submit(url, DESKTOP_UA, &[]).await;
    assert_eq!(scanned.status, 303);
    let page = text(
        &h.browse(header(&scanned, "location").unwrap(), DESKTOP_UA)
            .await,
    );
    assert!(page.contains("¥18.00"), "{page}");

    // Each scan opens a checkout: a code takes a burst of 10, then says to wait.
    let mut answers = Vec::new();
    for _ in 0..12 {
        answers.push(h.submit(url, DESKTOP_UA, &[]).await);
    }
    let first_refused = answers.iter().position(|r| r.status == 429).unwrap();
    assert_eq!(first_refused, 9, "the scan before counts: 10 in all");
    assert!(header(&answers[first_refused], "retry-after").is_some());
    assert!(text(&answers[first_refused]).contains("data-state=\"busy\""));
}

on_both_ledgers!(inside_wechat_the_cashier_learns_the_payer_and_offers_jsapi);

/// The cookie a response sets, as the browser sends it back (`name=value`).
fn session_cookie(response: &moongate_contract::HttpResponse) -> String {
    header(response, "set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Chooses `method` on the cashier page inside the wallet app `agent`; the page it leads to.
async fn choose(h: &Harness, cashier: &str, agent: &str, method: &str) -> String {
    let chosen = h
        .submit(&format!("{cashier}/pay"), agent, &[("method", method)])
        .await;
    assert_eq!(chosen.status, 303, "{}", text(&chosen));
    text(&in_app(h, agent, cashier, None).await)
}

/// A code made from `body` and scanned in `agent`: the code and the cashier it leads to.
async fn scanned(
    h: &Harness,
    client: &moongate_testkit::client::MerchantClient,
    body: Value,
    key: &str,
    agent: &str,
) -> (Value, String) {
    let (status, code) = h.post(client, "/v1/codes", &body.to_string(), key).await;
    assert_eq!(status, 201, "{code}");
    let scanned = h.submit(code["url"].as_str().unwrap(), agent, &[]).await;
    assert_eq!(scanned.status, 303);
    let cashier = header(&scanned, "location").unwrap().to_owned();
    (code, cashier)
}

/// A checkout of `amount` fen for tea (reference `reference`, idempotency key `key`).
async fn tea_checkout(
    h: &Harness,
    client: &moongate_testkit::client::MerchantClient,
    amount: i64,
    reference: &str,
    key: &str,
) -> (u16, Value) {
    let body = json!({"amount": amount, "currency": "CNY", "merchant_reference": reference,
                      "description": "Tea", "return_url": "https://shop.example/done"});
    h.post(client, "/v1/checkouts", &body.to_string(), key)
        .await
}

/// A browser inside WeChat: the user agent, and the cookie it holds (one at a time here).
async fn wechat(h: &Harness, url: &str, cookie: Option<&str>) -> moongate_contract::HttpResponse {
    in_app(h, common::WECHAT_UA, url, cookie).await
}

/// A browser inside a wallet's app (`agent`), and the cookie it holds.
async fn in_app(
    h: &Harness,
    agent: &str,
    url: &str,
    cookie: Option<&str>,
) -> moongate_contract::HttpResponse {
    let mut headers = vec![("user-agent".to_owned(), agent.to_owned())];
    if let Some(cookie) = cookie {
        headers.push(("cookie".to_owned(), cookie.to_owned()));
    }
    let request = moongate_contract::HttpRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers,
        body: vec![],
    };
    h.http.send(&request).await.unwrap()
}

async fn inside_wechat_the_cashier_learns_the_payer_and_offers_jsapi(h: Harness) {
    // Shop B's code, scanned inside WeChat: the amount, then the cashier.
    let (code, cashier) = scanned(
        &h,
        &h.shop_b,
        json!({"name": "Noodles", "currency": "CNY", "amount": 2600}),
        "wx-code",
        common::WECHAT_UA,
    )
    .await;
    // The cashier asks WeChat who the payer is, with the one configured callback.
    let asked = wechat(&h, &cashier, None).await;
    assert_eq!(asked.status, 302, "{}", text(&asked));
    let authorize = header(&asked, "location").unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!(
            "http://{}/connect/oauth2/authorize?appid={}&redirect_uri=http%3A%2F%2F{}%2Fcashier%2Fidentity&response_type=code&scope=snsapi_base&state=",
            h.wechat_addr,
            common::WX_APPID,
            h.gateway.addr.to_string().replace(':', "%3A")
        )),
        "{authorize}"
    );
    let cookie = header(&asked, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("Path=/cashier/identity"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    // WeChat's page (inside WeChat only) sends the browser back with a code.
    let outside = h.browse(&authorize, DESKTOP_UA).await;
    assert!(text(&outside).contains("请在微信客户端打开链接"));
    let back = wechat(&h, &authorize, None).await;
    assert_eq!(back.status, 302, "{}", text(&back));
    let callback = header(&back, "location").unwrap().to_owned();
    assert!(callback.contains("code="), "{callback}");
    // Another browser's answer (no cookie, another cookie) is refused and spends nothing.
    assert_eq!(wechat(&h, &callback, None).await.status, 404);
    assert_eq!(
        wechat(&h, &callback, Some("moongate_identity=someone-else"))
            .await
            .status,
        404
    );
    let done = wechat(&h, &callback, Some(&cookie)).await;
    assert_eq!(done.status, 303, "{}", text(&done));
    assert_eq!(header(&done, "location"), Some(cashier.as_str()));
    // Single-use.
    assert_eq!(wechat(&h, &callback, Some(&cookie)).await.status, 404);
    // The cashier now offers WeChat's in-app payment, for this payer.
    let page = text(&wechat(&h, &cashier, None).await);
    assert!(page.contains("value=\"wechat_jsapi\""), "{page}");
    let page = choose(&h, &cashier, common::WECHAT_UA, "wechat_jsapi").await;
    assert!(page.contains("WeixinJSBridge"), "{page}");
    let payment_id = state_attr(&page, "data-payment").unwrap();
    let (_, payment) = h
        .get(&h.shop_b, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["method"], "wechat_jsapi");
    assert_eq!(payment["amount"], 2600);
    assert_eq!(
        payment["payer"]["openid"],
        moongate_testkit::sandbox::wechat::openid_of(common::WX_APPID, "shopper")
    );
    assert_eq!(payment["metadata"]["code_id"], code["id"]);
    h.wechat("/sandbox/pay", json!({"out_trade_no": payment_id}))
        .await;
    h.wait_for(&h.shop_b, &payment_id, "succeeded").await;

    // A desktop browser is not sent to WeChat's OAuth.
    let (_, checkout) = tea_checkout(&h, &h.shop_b, 100, "o-2", "co-desk").await;
    let desk = h
        .browse(checkout["url"].as_str().unwrap(), DESKTOP_UA)
        .await;
    assert_eq!(desk.status, 200);
    // A refused exchange (a made-up code) lands on the page with a notice and the QR path.
    let asked = wechat(&h, checkout["url"].as_str().unwrap(), None).await;
    assert_eq!(asked.status, 302);
    let cookie = session_cookie(&asked);
    let authorize = header(&asked, "location").unwrap();
    let state = url::Url::parse(authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let forged = format!(
        "http://{}/cashier/identity?code=made-up&state={state}",
        h.gateway.addr
    );
    let refused = wechat(&h, &forged, Some(&cookie)).await;
    assert_eq!(refused.status, 303);
    let page_url = header(&refused, "location").unwrap().to_owned();
    assert!(page_url.ends_with("?n=payer_unknown"), "{page_url}");
    let page = text(&wechat(&h, &page_url, None).await);
    assert!(
        page.contains("value=\"wechat_native\"") && !page.contains("wechat_jsapi"),
        "{page}"
    );
}

on_both_ledgers!(inside_alipay_the_cashier_learns_the_payer_and_pays_with_jsapi);

/// A browser inside the Alipay app.
async fn alipay(h: &Harness, url: &str, cookie: Option<&str>) -> moongate_contract::HttpResponse {
    in_app(h, common::ALIPAY_UA, url, cookie).await
}

/// Inside the Alipay app, `cashier` (of a merchant whose Alipay account has the JSAPI
/// product) asks Alipay who pays (`auth_base`, naming `link_app_id`) and comes back to offer
/// `alipay_jsapi`; the payment it creates is paid on the sandbox's sheet. The payment's id.
async fn alipay_identity_round_trip(h: &Harness, cashier: &str, link_app_id: &str) -> String {
    let asked = alipay(h, cashier, None).await;
    assert_eq!(asked.status, 302, "{}", text(&asked));
    let authorize = header(&asked, "location").unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!(
            "http://{}/oauth2/publicAppAuthorize.htm?app_id={link_app_id}&scope=auth_base&redirect_uri=http%3A%2F%2F{}%2Fcashier%2Fidentity&state=",
            h.sandbox_addr,
            h.gateway.addr.to_string().replace(':', "%3A")
        )),
        "{authorize}"
    );
    let cookie = session_cookie(&asked);
    // Alipay's page works only inside Alipay; there it sends the browser back with a code.
    assert!(text(&h.browse(&authorize, DESKTOP_UA).await).contains("请在支付宝客户端打开"));
    let back = alipay(h, &authorize, None).await;
    assert_eq!(back.status, 302, "{}", text(&back));
    let callback = header(&back, "location").unwrap().to_owned();
    assert!(
        callback.contains("auth_code=") && callback.contains("source=alipay_wallet"),
        "{callback}"
    );
    assert_eq!(alipay(h, &callback, None).await.status, 404);
    let done = alipay(h, &callback, Some(&cookie)).await;
    assert_eq!(done.status, 303, "{}", text(&done));
    assert_eq!(header(&done, "location"), Some(cashier));
    assert_eq!(alipay(h, &callback, Some(&cookie)).await.status, 404);
    let page = text(&alipay(h, cashier, None).await);
    assert!(page.contains("value=\"alipay_jsapi\""), "{page}");
    assert!(!page.contains("value=\"alipay_wap\""), "{page}");
    let page = choose(h, cashier, common::ALIPAY_UA, "alipay_jsapi").await;
    assert!(page.contains("AlipayJSBridge.call('tradePay'"), "{page}");
    state_attr(&page, "data-payment").unwrap()
}

/// Pays a JSAPI trade on the sandbox's sheet, as the Alipay user `user`.
async fn pay_on_sheet(h: &Harness, trade_no: &str, user: &str) -> u16 {
    let request = moongate_contract::HttpRequest {
        method: HttpMethod::Get,
        url: format!(
            "http://{}/sandbox/tradepay?tradeNO={trade_no}",
            h.sandbox_addr
        ),
        headers: vec![
            ("user-agent".to_owned(), common::ALIPAY_UA.to_owned()),
            ("x-sandbox-alipay-user".to_owned(), user.to_owned()),
        ],
        body: vec![],
    };
    h.http.send(&request).await.unwrap().status
}

async fn inside_alipay_the_cashier_learns_the_payer_and_pays_with_jsapi(h: Harness) {
    // Shop B's code (its own app), scanned inside Alipay.
    let (code, cashier) = scanned(
        &h,
        &h.shop_b,
        json!({"name": "Dumplings", "currency": "CNY", "amount": 1800}),
        "ali-code",
        common::ALIPAY_UA,
    )
    .await;
    let payment_id = alipay_identity_round_trip(&h, &cashier, common::APP_ID).await;
    let (_, payment) = h
        .get(&h.shop_b, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["method"], "alipay_jsapi");
    assert_eq!(payment["amount"], 1800);
    assert_eq!(payment["metadata"]["code_id"], code["id"]);
    // The app is of the user-id generation: the payer is a 2088 id.
    let buyer = payment["payer"]["openid"].as_str().unwrap();
    assert!(buyer.len() == 16 && buyer.starts_with("2088"), "{payment}");
    let trade_no = payment["next_action"]["trade_no"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(payment["next_action"]["type"], "alipay_jsapi");
    // Another Alipay user cannot pay this payer's trade; the payer can, once.
    assert_eq!(pay_on_sheet(&h, &trade_no, "someone-else").await, 400);
    assert_eq!(pay_on_sheet(&h, &trade_no, "shopper").await, 200);
    h.wait_for(&h.shop_b, &payment_id, "succeeded").await;
    assert_ne!(pay_on_sheet(&h, &trade_no, "shopper").await, 200);
    // Back from the sheet the page waits instead of opening it again.
    let after = text(&alipay(&h, &format!("{cashier}?sheet=done"), None).await);
    assert!(!after.contains("AlipayJSBridge"), "{after}");

    // Shop F, served through the ISV: the link names the merchant's own app, and the ISV
    // exchanges the code with the merchant's token.
    let (_, checkout) = tea_checkout(&h, &h.shop_f, 990, "isv-co", "co-isv-ali").await;
    let cashier = checkout["url"].as_str().unwrap().to_owned();
    let payment_id = alipay_identity_round_trip(&h, &cashier, common::ISV_MERCHANT_APP_ID).await;
    let (_, payment) = h
        .get(&h.shop_f, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["method"], "alipay_jsapi");
    let trade_no = payment["next_action"]["trade_no"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(pay_on_sheet(&h, &trade_no, "shopper").await, 200);
    h.wait_for(&h.shop_f, &payment_id, "succeeded").await;

    // A merchant whose app lacks the product (shop A) keeps the app's WAP cashier: no
    // authorisation round trip.
    let (_, checkout) = tea_checkout(&h, &h.shop_a, 500, "a-co", "co-a-ali").await;
    let page = alipay(&h, checkout["url"].as_str().unwrap(), None).await;
    assert_eq!(page.status, 200);
    let page = text(&page);
    assert!(
        page.contains("value=\"alipay_wap\"") && !page.contains("alipay_jsapi"),
        "{page}"
    );
}

on_both_ledgers!(inside_wechat_a_sub_merchant_learns_the_payer_under_its_own_app);

/// Shop G pays under its own official account (`sub_appid`) as a sub-merchant of a WeChat Pay
/// service provider: the OAuth names that app, its secret (the sub-merchant's) exchanges the
/// code, and the order's payer is a `sub_openid` under it.
async fn inside_wechat_a_sub_merchant_learns_the_payer_under_its_own_app(h: Harness) {
    let (status, checkout) = tea_checkout(&h, &h.shop_g, 1200, "g-1", "co-g-wx").await;
    assert_eq!(status, 201, "{checkout}");
    let cashier = checkout["url"].as_str().unwrap().to_owned();
    let asked = wechat(&h, &cashier, None).await;
    assert_eq!(asked.status, 302, "{}", text(&asked));
    let authorize = header(&asked, "location").unwrap().to_owned();
    assert!(
        authorize.contains(&format!("appid={}&", common::SUB_APPID_G)),
        "{authorize}"
    );
    let cookie = session_cookie(&asked);
    let back = wechat(&h, &authorize, None).await;
    let callback = header(&back, "location").unwrap().to_owned();
    let done = wechat(&h, &callback, Some(&cookie)).await;
    assert_eq!(header(&done, "location"), Some(cashier.as_str()));
    let page = choose(&h, &cashier, common::WECHAT_UA, "wechat_jsapi").await;
    let payment_id = state_attr(&page, "data-payment").unwrap();
    let (_, payment) = h
        .get(&h.shop_g, &format!("/v1/payments/{payment_id}"))
        .await;
    assert_eq!(payment["method"], "wechat_jsapi");
    assert_eq!(
        payment["payer"]["openid"],
        moongate_testkit::sandbox::wechat::openid_of(common::SUB_APPID_G, "shopper")
    );
    assert_eq!(
        payment["next_action"]["parameters"]["appId"],
        common::SUB_APPID_G
    );
    h.wechat("/sandbox/pay", json!({"out_trade_no": payment_id}))
        .await;
    h.wait_for(&h.shop_g, &payment_id, "succeeded").await;
}
