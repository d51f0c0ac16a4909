#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Thousands of small merchants under one contract, shown with two: shops F and G are
//! sub-merchants of one WeChat Pay service provider (`wx_sp`) and two merchants that
//! authorised one Alipay ISV app (`isv`). Each pays, is notified, refunds and reconciles its
//! own bill; a notification of one arriving at the other's address is refused and changes
//! nothing.

mod common;

use common::{
    Harness, ISV_MERCHANT_APP_ID, ISV_MERCHANT_APP_ID_G, SP_MCHID, SUB_APPID_G, SUB_MCHID_F,
    SUB_MCHID_G,
};
use moongate::reconcile::Category;
use moongate::reconcile::run::{RunRequest, Source, reconcile};
use moongate_contract::{HttpMethod, HttpRequest};
use moongate_testkit::client::MerchantClient;
use serde_json::{Value, json};

on_both_ledgers!(two_sub_merchants_of_each_partner_pay_refund_and_reconcile_apart);

/// One shop's side of the test.
struct Shop<'a> {
    id: &'static str,
    client: &'a MerchantClient,
    /// Its WeChat Pay payment and refund, fen.
    wechat: (i64, i64),
    /// Its Alipay payment and refund, fen.
    alipay: (i64, i64),
}

async fn create(h: &Harness, shop: &Shop<'_>, method: &str, amount: i64, key: &str) -> String {
    let body = json!({
        "amount": amount, "currency": "CNY", "method": method,
        "merchant_reference": format!("{}-{key}", shop.id), "description": "Pu'er tea cake",
    });
    let (status, payment) = h.create_with(shop.client, body, key).await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "requires_action", "{payment}");
    payment["id"].as_str().unwrap().to_owned()
}

async fn refund(h: &Harness, shop: &Shop<'_>, payment: &str, amount: i64, key: &str) {
    let (status, refund) = h
        .post(
            shop.client,
            &format!("/v1/payments/{payment}/refunds"),
            &json!({"amount": amount}).to_string(),
            key,
        )
        .await;
    assert_eq!(status, 201, "{refund}");
    let id = refund["id"].as_str().unwrap();
    h.wait_for_refund(shop.client, id, "succeeded").await;
}

/// The merchant's events, as (id, type): what a notification would add to (their delivery
/// bookkeeping changes on its own).
async fn events(h: &Harness, client: &MerchantClient) -> Vec<(String, String)> {
    let (status, events) = h.get(client, "/v1/events").await;
    assert_eq!(status, 200, "{events}");
    events["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn post(h: &Harness, url: String, content_type: &str, body: &str) -> (u16, String) {
    let response = h
        .http
        .send(&HttpRequest {
            method: HttpMethod::Post,
            url,
            headers: vec![("content-type".into(), content_type.into())],
            body: body.as_bytes().to_vec(),
        })
        .await
        .unwrap();
    (
        response.status,
        String::from_utf8_lossy(&response.body).into_owned(),
    )
}

async fn two_sub_merchants_of_each_partner_pay_refund_and_reconcile_apart(h: Harness) {
    let shops = [
        Shop {
            id: "shop_f",
            client: &h.shop_f,
            wechat: (2_500, 1_000),
            alipay: (3_000, 500),
        },
        Shop {
            id: "shop_g",
            client: &h.shop_g,
            wechat: (4_100, 600),
            alipay: (5_200, 1_200),
        },
    ];
    let gateway = h.gateway.addr;
    let mut paid = Vec::new();
    for (shop, (sub_mchid, auth_app_id)) in shops.iter().zip([
        (SUB_MCHID_F, ISV_MERCHANT_APP_ID),
        (SUB_MCHID_G, ISV_MERCHANT_APP_ID_G),
    ]) {
        // WeChat Pay: placed by the provider for this sub-merchant, paid, and the provider's
        // notification delivered to this shop's own address.
        let wechat = create(&h, shop, "wechat_native", shop.wechat.0, "wx-1").await;
        let answer = h
            .wechat("/sandbox/pay", json!({"out_trade_no": wechat}))
            .await;
        assert_eq!(answer.status, 200);
        h.wait_for(shop.client, &wechat, "succeeded").await;
        let sent = h.wechat_notifications(&wechat).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0]["mchid"], SP_MCHID);
        assert_eq!(sent[0]["acknowledged"], true);
        let url = sent[0]["url"].as_str().unwrap();
        assert!(
            url.ends_with(&format!("/notify/wechatpay/{}/wechat_sub", shop.id)),
            "{url}"
        );
        // Alipay: called by the ISV app with this merchant's token, notified with its
        // auth_app_id.
        let alipay = create(&h, shop, "alipay_qr", shop.alipay.0, "ali-1").await;
        let answer = h
            .sandbox("/sandbox/pay", json!({"out_trade_no": alipay}))
            .await;
        assert_eq!(answer.status, 200);
        h.wait_for(shop.client, &alipay, "succeeded").await;
        let sent = h.sandbox_notifications(&alipay).await;
        assert_eq!(sent[0]["acknowledged"], true);
        let body = sent[0]["body"].as_str().unwrap();
        assert!(
            body.contains(&format!("auth_app_id={auth_app_id}")),
            "{body}"
        );
        assert!(
            sent[0]["url"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/notify/alipay/{}/alipay_isv", shop.id))
        );
        paid.push((sub_mchid, wechat, alipay));
    }
    // Shop G's sub-merchant has its own app: a JSAPI payment is signed for that app.
    let body = json!({
        "amount": 100, "currency": "CNY", "method": "wechat_jsapi",
        "payer": {"openid": "oG_sub_app_openid_0001"}, "description": "Tea",
        "merchant_reference": "shop_g-jsapi",
    });
    let (status, jsapi) = h.create_with(&h.shop_g, body, "wx-jsapi").await;
    assert_eq!(status, 201, "{jsapi}");
    assert_eq!(
        jsapi["next_action"]["parameters"]["appId"], SUB_APPID_G,
        "{jsapi}"
    );

    // Cross-routing. Shop F's next WeChat Pay notification is held at the provider and sent,
    // verified by the shared keys, to shop G's address first: refused, and nothing is paid.
    let held = create(&h, &shops[0], "wechat_native", 700, "wx-2").await;
    assert_eq!(h.wechat("/sandbox/hold", json!({})).await.status, 204);
    let answer = h
        .wechat("/sandbox/pay", json!({"out_trade_no": held}))
        .await;
    assert_eq!(answer.status, 200);
    let g_events = events(&h, &h.shop_g).await;
    let misrouted = h
        .wechat(
            "/sandbox/misroute",
            json!({"out_trade_no": held, "url": format!("http://{gateway}/notify/wechatpay/shop_g/wechat_sub")}),
        )
        .await;
    let status: Value = serde_json::from_slice(&misrouted.body).unwrap();
    assert_eq!(status["status"], 500, "{status}");
    let (_, payment) = h.get(&h.shop_f, &format!("/v1/payments/{held}")).await;
    assert_eq!(payment["status"], "requires_action", "{payment}");
    assert_eq!(events(&h, &h.shop_g).await, g_events);
    // Released, it reaches shop F's own address and pays the order there.
    assert_eq!(h.wechat("/sandbox/release", json!({})).await.status, 200);
    h.wait_for(&h.shop_f, &held, "succeeded").await;

    // Shop F's Alipay notification (signed in its body) posted to shop G's address: refused.
    let sent = h.sandbox_notifications(&paid[0].2).await;
    let form = sent[0]["body"].as_str().unwrap();
    let (status, answer) = post(
        &h,
        format!("http://{gateway}/notify/alipay/shop_g/alipay_isv"),
        "application/x-www-form-urlencoded",
        form,
    )
    .await;
    assert_ne!(answer, "success", "{status} {answer}");
    assert_eq!(events(&h, &h.shop_g).await, g_events);

    // Refunds, each through its own sub-merchant or authorisation.
    for (shop, (_, wechat, alipay)) in shops.iter().zip(&paid) {
        refund(&h, shop, wechat, shop.wechat.1, "wx-r").await;
        refund(&h, shop, alipay, shop.alipay.1, "ali-r").await;
    }

    // Each sub-merchant's own bill: its records only, all matched.
    h.advance_statement_clock(false).await;
    let day = moongate_contract::statement::beijing_day(time::OffsetDateTime::now_utc());
    for shop in &shops {
        let held_payment = if shop.id == "shop_f" { 700 } else { 0 };
        for (account, (amount, refunded), extra) in [
            ("wechat_sub", shop.wechat, held_payment),
            ("alipay_isv", shop.alipay, 0),
        ] {
            let report = reconcile(
                &h.gateway.gateway,
                RunRequest {
                    merchant_id: shop.id.to_owned(),
                    account_id: account.to_owned(),
                    day,
                    source: Source::Download,
                },
                None,
            )
            .await
            .unwrap();
            let payments = 1 + u64::from(extra > 0);
            let at = format!("{}/{account}", shop.id);
            assert_eq!(report.statement_totals.lines, payments + 1, "{at}");
            assert_eq!(report.count(Category::Matched), payments, "{at}");
            assert_eq!(report.count(Category::Refund), 1, "{at}");
            assert_eq!(report.break_count, 0, "{at}: {:#?}", report.breaks);
            assert_eq!(
                report.control.statement_net,
                amount + extra - refunded,
                "{at}"
            );
            assert_eq!(report.control.difference, 0, "{at}");
        }
    }
}

/// A provider's limit and breaker set on the partner are shared by its sub-merchants; a
/// sub-merchant's own refusals are its own and never stop a sibling.
#[tokio::test]
async fn a_partners_limit_and_breaker_are_shared_and_a_sub_merchants_refusals_its_own() {
    let h = Harness::start().await;
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    // A small breaker on the provider, and shop G also holding an account for a sub-merchant
    // the provider has no relationship with (every call refused: 403 NO_AUTH).
    let tuned = original.replace(
        "[partners.wx_sp.settings]",
        "circuit = { min_calls = 4, error_percent = 50, window_ms = 60000, open_ms = 60000 }\n[partners.wx_sp.settings]",
    ) + "\n[merchants.shop_g.accounts.wechat_unbound]\nprovider = \"wechatpay\"\npartner = \"wx_sp\"\nsettings = { sub_mchid = \"1900000299\" }\n";
    std::fs::write(&h.config_path, tuned).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    let native = |account: &str, key: &str| {
        json!({
            "amount": 100, "currency": "CNY", "method": "wechat_native", "account": account,
            "merchant_reference": key, "description": "Tea",
        })
    };
    let circuits = || async {
        let admin = h.gateway.admin_addr.unwrap();
        let body = h.http_get(&format!("http://{admin}/circuits")).await.body;
        serde_json::from_slice::<Value>(&body).unwrap()
    };
    let partner_circuit = |circuits: &Value| {
        circuits["partners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["partner"] == "wx_sp")
            .map(|p| p["circuit"].as_str().unwrap().to_owned())
            .unwrap()
    };

    // Refused, again and again: the provider answered, so no breaker moves.
    for i in 0..6 {
        let key = format!("unbound-{i}");
        let (status, payment) = h
            .create_with(&h.shop_g, native("wechat_unbound", &key), &key)
            .await;
        assert_eq!(status, 201, "{payment}");
        assert_eq!(payment["status"], "failed", "{payment}");
        assert_eq!(payment["failure"]["code"], "NO_AUTH", "{payment}");
    }
    assert_eq!(partner_circuit(&circuits().await), "closed");
    let (_, sibling) = h
        .create_with(&h.shop_f, native("wechat_sub", "f-after-refusals"), "f-1")
        .await;
    assert_eq!(sibling["status"], "requires_action", "{sibling}");

    // The provider itself failing opens the partner's breaker: HTTP 500 to seven of shop F's
    // calls makes half of the seven answered calls above and these seven failures. Then shop
    // G's next call is not sent at all, while a direct merchant's goes on.
    let armed = h
        .wechat("/sandbox/fault", json!({"mode": "http_500", "count": 7}))
        .await;
    assert_eq!(armed.status, 204);
    for i in 0..7 {
        let key = format!("f-500-{i}");
        let (_, payment) = h
            .create_with(&h.shop_f, native("wechat_sub", &key), &key)
            .await;
        assert_eq!(payment["status"], "unknown", "{payment}");
    }
    let now = circuits().await;
    assert_eq!(partner_circuit(&now), "open", "{now}");
    let calls = h.provider_calls(h.wechat_addr).await;
    let (_, stopped) = h
        .create_with(&h.shop_g, native("wechat_sub", "g-open"), "g-open")
        .await;
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert_eq!(stopped["failure"]["code"], "circuit_open", "{stopped}");
    assert_eq!(
        h.provider_calls(h.wechat_addr).await,
        calls,
        "a call was sent"
    );
    let (_, direct) = h
        .create_with(&h.shop_a, native("wechat_main", "a-direct"), "a-direct")
        .await;
    assert_eq!(direct["status"], "requires_action", "{direct}");
    // Shop G's own breaker saw nothing of it.
    let now = circuits().await;
    let own = now["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["merchant"] == "shop_g" && a["account"] == "wechat_sub")
        .unwrap()
        .clone();
    assert_eq!(
        (own["circuit"].as_str(), own["partner"].as_str()),
        (Some("closed"), Some("wx_sp"))
    );

    // A limit on the provider: its sub-merchants' calls together, not each one's.
    let limited = original.replace(
        "[partners.wx_sp.settings]",
        "rate_limit = { requests_per_second = 1, burst = 2, max_wait_ms = 0 }\n[partners.wx_sp.settings]",
    );
    std::fs::write(&h.config_path, limited).unwrap();
    moongate::server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    let mut outcomes = Vec::new();
    for (i, shop) in [&h.shop_f, &h.shop_g, &h.shop_f].into_iter().enumerate() {
        let key = format!("limited-{i}");
        let (_, payment) = h.create_with(shop, native("wechat_sub", &key), &key).await;
        outcomes.push(
            payment["failure"]["code"]
                .as_str()
                .unwrap_or("none")
                .to_owned(),
        );
    }
    assert_eq!(outcomes, ["none", "none", "outbound_rate_limited"]);
    let (_, direct) = h
        .create_with(&h.shop_a, native("wechat_main", "a-direct-2"), "a-direct-2")
        .await;
    assert_eq!(direct["status"], "requires_action", "{direct}");
}
