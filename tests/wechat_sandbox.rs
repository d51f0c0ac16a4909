//! The WeChat Pay sandbox is strict: it refuses what WeChat Pay refuses (china-wallets.md F).
//! These tests talk to it directly with requests rendered by the adapter, then broken on purpose.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Harness, MCHID_A, MERCHANT_SERIAL, PUB_KEY_ID, WX_APPID, fixtures};
use moongate_adapter_wechatpay::verify::PlatformKeys;
use moongate_adapter_wechatpay::{AccountKeys, WechatPayAdapter, sign};
use moongate_contract::crypto::RsaVerifier;
use moongate_contract::{CallContext, HttpMethod, HttpRequest, HttpResponse};
use serde_json::{Value, json};

/// An adapter for one sandbox merchant; `public_key` is the platform key it verifies with.
fn adapter_for(h: &Harness, mchid: &str, apiv3_key: &str, public_key: bool) -> WechatPayAdapter {
    let keys = fixtures().join("keys");
    let read = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
    let public = read("sandbox-wechatpay-public-key.pem");
    WechatPayAdapter::new(&AccountKeys {
        mchid,
        appid: WX_APPID,
        merchant_serial_no: MERCHANT_SERIAL,
        merchant_private_key: &read("wechatpay-go-merchant-private-key.pem"),
        apiv3_key,
        api_v2_key: None,
        wechatpay_public_key: public_key.then_some((PUB_KEY_ID, public.as_str())),
        platform_certificates: &[],
        api_base_url: &format!("http://{}", h.wechat_addr),
        oauth: None,
    })
    .unwrap()
}

fn adapter(h: &Harness) -> WechatPayAdapter {
    adapter_for(h, MCHID_A, common::APIV3_KEY_A, true)
}

fn cx(offset_secs: i64) -> CallContext {
    CallContext {
        now: time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_secs),
        nonce: "593BEC0C930BF1AFEB40B4A08C8FB242".to_owned(),
    }
}

fn native_body(out_trade_no: &str) -> String {
    json!({
        "appid": WX_APPID, "mchid": MCHID_A, "description": "Tea",
        "out_trade_no": out_trade_no, "notify_url": "https://shop.example/notify",
        "amount": {"total": 100, "currency": "CNY"},
    })
    .to_string()
}

async fn send(h: &Harness, request: &HttpRequest) -> (HttpResponse, Value) {
    let response = h.http.send(request).await.unwrap();
    let body = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    (response, body)
}

/// Every answer, errors included, is signed by the platform key under the merchant's mode.
fn assert_signed(response: &HttpResponse) {
    let public = RsaVerifier::from_pem(
        &std::fs::read_to_string(fixtures().join("keys/sandbox-wechatpay-public-key.pem")).unwrap(),
    )
    .unwrap();
    let keys = PlatformKeys::new().with_public_key(PUB_KEY_ID, public);
    keys.verify(
        |name| response.header(name).map(str::to_owned),
        &response.body,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
}

#[tokio::test]
async fn signatures_are_checked_strictly() {
    let h = Harness::start().await;
    let adapter = adapter(&h);
    let post = |cx: &CallContext, body: String| {
        adapter
            .v3_request(
                cx,
                HttpMethod::Post,
                "/v3/pay/transactions/native",
                Some(body),
            )
            .unwrap()
    };

    // A good request passes; the Authorization items may come in any order.
    let good = post(&cx(0), native_body("sbx_order_1"));
    let (response, body) = send(&h, &good).await;
    assert_eq!(response.status, 200, "{body}");
    assert_signed(&response);
    let mut reordered = post(&cx(0), native_body("sbx_order_2"));
    for (name, value) in reordered.headers.iter_mut() {
        if name == "authorization" {
            let items = sign::parse_authorization(value).unwrap();
            *value = format!(
                "WECHATPAY2-SHA256-RSA2048 signature=\"{}\", serial_no=\"{}\", timestamp=\"{}\", mchid=\"{}\", nonce_str=\"{}\"",
                items.signature, items.serial_no, items.timestamp, items.mchid, items.nonce_str
            );
        }
    }
    let (response, body) = send(&h, &reordered).await;
    assert_eq!(response.status, 200, "{body}");

    // The body changed after signing: 401 SIGN_ERROR with WeChat's diagnostic detail.
    let mut tampered = post(&cx(0), native_body("sbx_order_3"));
    tampered.body = native_body("sbx_order_4").into_bytes();
    let (response, body) = send(&h, &tampered).await;
    assert_eq!(response.status, 401);
    assert_eq!(body["code"], "SIGN_ERROR");
    assert_eq!(body["detail"]["detail"]["issue"], "sign not match");
    assert_eq!(body["detail"]["sign_information"]["method"], "POST");
    assert_signed(&response);

    // Stale and future timestamps (5 minutes), another certificate serial, no header at all.
    for offset in [-301, 301] {
        let (response, body) = send(&h, &post(&cx(offset), native_body("sbx_order_5"))).await;
        assert_eq!(
            (response.status, body["code"].as_str()),
            (401, Some("SIGN_ERROR")),
            "{offset}"
        );
    }
    let mut other_serial = post(&cx(0), native_body("sbx_order_6"));
    for (name, value) in other_serial.headers.iter_mut() {
        if name == "authorization" {
            *value = value.replace(MERCHANT_SERIAL, "0123456789ABCDEF");
        }
    }
    let (response, body) = send(&h, &other_serial).await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (401, Some("SIGN_ERROR"))
    );
    let mut anonymous = post(&cx(0), native_body("sbx_order_7"));
    anonymous
        .headers
        .retain(|(name, _)| name != "authorization");
    let (response, body) = send(&h, &anonymous).await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (401, Some("SIGN_ERROR"))
    );
}

#[tokio::test]
async fn required_fields_and_order_states_are_enforced() {
    let h = Harness::start().await;
    let adapter = adapter(&h);
    let call = |method: HttpMethod, path: &str, body: Option<Value>| {
        adapter
            .v3_request(&cx(0), method, path, body.map(|b| b.to_string()))
            .unwrap()
    };
    // JSAPI without payer.openid, H5 without scene_info, amounts that are not fen integers.
    let mut jsapi: Value = serde_json::from_str(&native_body("sbx_req_1")).unwrap();
    let (response, body) = send(
        &h,
        &call(
            HttpMethod::Post,
            "/v3/pay/transactions/jsapi",
            Some(jsapi.clone()),
        ),
    )
    .await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (400, Some("PARAM_ERROR")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/body/payer/openid")
    );
    jsapi["payer"] = json!({"openid": "o1"});
    let (response, _) = send(
        &h,
        &call(HttpMethod::Post, "/v3/pay/transactions/jsapi", Some(jsapi)),
    )
    .await;
    assert_eq!(response.status, 200);
    let h5: Value = serde_json::from_str(&native_body("sbx_req_2")).unwrap();
    let (response, _) = send(
        &h,
        &call(HttpMethod::Post, "/v3/pay/transactions/h5", Some(h5)),
    )
    .await;
    assert_eq!(response.status, 400);
    let mut yuan: Value = serde_json::from_str(&native_body("sbx_req_3")).unwrap();
    yuan["amount"]["total"] = json!(1.5);
    let (response, _) = send(
        &h,
        &call(HttpMethod::Post, "/v3/pay/transactions/native", Some(yuan)),
    )
    .await;
    assert_eq!(response.status, 400);
    let mut foreign_app: Value = serde_json::from_str(&native_body("sbx_req_4")).unwrap();
    foreign_app["appid"] = json!("wx0000000000000000");
    let (response, body) = send(
        &h,
        &call(
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(foreign_app),
        ),
    )
    .await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (400, Some("APPID_MCHID_NOT_MATCH"))
    );

    // NOTPAY → CLOSED: close answers 204 with an empty, signed body; a closed order is not paid.
    let (response, _) = send(
        &h,
        &call(
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(serde_json::from_str(&native_body("sbx_state_1")).unwrap()),
        ),
    )
    .await;
    assert_eq!(response.status, 200);
    let close = call(
        HttpMethod::Post,
        "/v3/pay/transactions/out-trade-no/sbx_state_1/close",
        Some(json!({"mchid": MCHID_A})),
    );
    let (response, _) = send(&h, &close).await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    assert_signed(&response);
    let query = call(
        HttpMethod::Get,
        &format!("/v3/pay/transactions/out-trade-no/sbx_state_1?mchid={MCHID_A}"),
        None,
    );
    let (_, body) = send(&h, &query).await;
    assert_eq!(body["trade_state"], "CLOSED");
    // Re-ordering a closed number is refused.
    let (response, body) = send(
        &h,
        &call(
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(serde_json::from_str(&native_body("sbx_state_1")).unwrap()),
        ),
    )
    .await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (400, Some("ORDERCLOSED"))
    );

    // NOTPAY → SUCCESS → REFUND; refunds never exceed the order.
    let (response, _) = send(
        &h,
        &call(
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(serde_json::from_str(&native_body("sbx_state_2")).unwrap()),
        ),
    )
    .await;
    assert_eq!(response.status, 200);
    let paid = h
        .wechat("/sandbox/pay", json!({"out_trade_no": "sbx_state_2"}))
        .await;
    assert_eq!(paid.status, 200);
    let refund = |no: &str, amount: i64| {
        call(
            HttpMethod::Post,
            "/v3/refund/domestic/refunds",
            Some(json!({"out_trade_no": "sbx_state_2", "out_refund_no": no,
                        "amount": {"refund": amount, "total": 100, "currency": "CNY"}})),
        )
    };
    let (response, body) = send(&h, &refund("sbx_refund_1", 60)).await;
    assert_eq!(
        (response.status, body["status"].as_str()),
        (200, Some("PROCESSING")),
        "{body}"
    );
    let (response, body) = send(&h, &refund("sbx_refund_2", 50)).await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );
    // The same refund number again is the same refund, not a second one.
    let (response, body) = send(&h, &refund("sbx_refund_1", 60)).await;
    assert_eq!(
        (response.status, body["out_refund_no"].as_str()),
        (200, Some("sbx_refund_1"))
    );
    let (_, body) = send(&h, &query).await;
    assert_eq!(body["trade_state"], "CLOSED");
    let query_paid = call(
        HttpMethod::Get,
        &format!("/v3/pay/transactions/out-trade-no/sbx_state_2?mchid={MCHID_A}"),
        None,
    );
    let (_, body) = send(&h, &query_paid).await;
    assert_eq!(body["trade_state"], "REFUND");
    assert_eq!(body["amount"]["total"], 100);
}

#[tokio::test]
async fn certificate_mode_serves_encrypted_platform_certificates() {
    let h = Harness::start().await;
    // Merchant A is in public-key mode: no certificates for it.
    let a = adapter(&h);
    let (response, _) = send(
        &h,
        &a.v3_request(&cx(0), HttpMethod::Get, "/v3/certificates", None)
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 404);
    // Merchant B is in certificate mode: the PEM decrypts with B's APIv3 key and is the one
    // configured for it.
    let keys = fixtures().join("keys");
    // No platform key yet: exactly the situation in which certificates are downloaded.
    let b = adapter_for(&h, common::MCHID_B, common::APIV3_KEY_B, false);
    let (response, body) = send(
        &h,
        &b.v3_request(&cx(0), HttpMethod::Get, "/v3/certificates", None)
            .unwrap(),
    )
    .await;
    assert_eq!(response.status, 200, "{body}");
    assert_eq!(
        response.header("wechatpay-serial"),
        Some(common::CERT_SERIAL)
    );
    let item = &body["data"][0];
    assert_eq!(item["serial_no"], common::CERT_SERIAL);
    let encrypted = &item["encrypt_certificate"];
    let pem = moongate_adapter_wechatpay::aead::decrypt(
        common::APIV3_KEY_B.as_bytes(),
        encrypted["nonce"].as_str().unwrap(),
        encrypted["associated_data"].as_str().unwrap(),
        encrypted["ciphertext"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(pem).unwrap(),
        std::fs::read_to_string(keys.join("sandbox-wechatpay-platform-cert.pem")).unwrap()
    );
}

#[tokio::test]
async fn notifications_are_retried_until_200_or_204() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    let h = Harness::start().await;
    // A receiver that answers 500, then 503, then 200: only the HTTP status counts.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let receiver = axum::Router::new().route(
        "/wx-notify",
        axum::routing::post(move || {
            let counter = Arc::clone(&counter);
            async move {
                match counter.fetch_add(1, Ordering::SeqCst) {
                    0 => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    1 => axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    _ => axum::http::StatusCode::OK,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await.unwrap() });

    let adapter = adapter(&h);
    let mut order: Value = serde_json::from_str(&native_body("sbx_retry_1")).unwrap();
    order["notify_url"] = json!(format!("http://{addr}/wx-notify"));
    let request = adapter
        .v3_request(
            &cx(0),
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(order.to_string()),
        )
        .unwrap();
    let (response, _) = send(&h, &request).await;
    assert_eq!(response.status, 200);
    let paid = h
        .wechat("/sandbox/pay", json!({"out_trade_no": "sbx_retry_1"}))
        .await;
    assert_eq!(paid.status, 200);
    // 15 s and 15 s on WeChat's schedule, divided by 1000 in the harness.
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = h.wechat_notifications("sbx_retry_1").await;
        if sent.first().is_some_and(|n| n["acknowledged"] == true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["attempts"], 3, "{sent:?}");
    assert_eq!(sent[0]["acknowledged"], true);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // Every attempt carried the same envelope id.
    let envelope: Value = serde_json::from_str(sent[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(envelope["id"], sent[0]["id"]);
    assert_eq!(envelope["event_type"], "TRANSACTION.SUCCESS");
    assert_eq!(envelope["resource"]["algorithm"], "AEAD_AES_256_GCM");
}

#[tokio::test]
async fn certificate_download_bootstraps_certificate_mode() {
    let h = Harness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = fixtures().join("keys");
    std::fs::write(dir.path().join("v3-b.secret"), common::APIV3_KEY_B).unwrap();
    std::fs::write(dir.path().join("v3-a.secret"), common::APIV3_KEY_A).unwrap();
    // No platform key configured yet: only the download can provide one.
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:1"
public_base_url = "https://pay.example"

[merchants.shop]
name = "Shop"
keys = [{{ id = "k", secret = {{ env = "UNUSED" }} }}]

[merchants.shop.accounts.wx_cert]
provider = "wechatpay"
settings = {{ mchid = "{b}", appid = "{WX_APPID}", merchant_serial_no = "{MERCHANT_SERIAL}", merchant_private_key = {{ file = "{key}" }}, apiv3_key = {{ file = "v3-b.secret" }}, api_base_url = "http://{addr}" }}

[merchants.shop.accounts.wx_public]
provider = "wechatpay"
settings = {{ mchid = "{a}", appid = "{WX_APPID}", merchant_serial_no = "{MERCHANT_SERIAL}", merchant_private_key = {{ file = "{key}" }}, apiv3_key = {{ file = "v3-a.secret" }}, api_base_url = "http://{addr}" }}
"#,
        a = MCHID_A,
        b = common::MCHID_B,
        key = keys.join("wechatpay-go-merchant-private-key.pem").display(),
        addr = h.wechat_addr,
    );
    let path = dir.path().join("moongate.toml");
    std::fs::write(&path, config).unwrap();
    let out = dir.path().join("certs");
    let written = moongate::certificates::download(&path, "shop", "wx_cert", &out)
        .await
        .unwrap();
    assert_eq!(
        written,
        vec![out.join(format!("wechatpay-platform-{}.pem", common::CERT_SERIAL))]
    );
    assert_eq!(
        std::fs::read_to_string(&written[0]).unwrap(),
        std::fs::read_to_string(keys.join("sandbox-wechatpay-platform-cert.pem")).unwrap()
    );
    // A public-key-mode merchant has no certificates: a clear error, nothing written.
    let error =
        moongate::certificates::download(&path, "shop", "wx_public", &dir.path().join("none"))
            .await
            .unwrap_err();
    assert!(error.to_string().contains("NOT_FOUND"), "{error}");
    assert!(!dir.path().join("none").exists());
    // A tampered answer is refused: the signature covers the raw body.
    let b = adapter_for(&h, common::MCHID_B, common::APIV3_KEY_B, false);
    let (mut response, _) = send(&h, &b.prepare_certificates(&cx(0)).unwrap()).await;
    b.parse_certificates(&response).unwrap();
    response.body.push(b' ');
    assert!(b.parse_certificates(&response).is_err());
}

/// A service provider places its sub-merchants' orders on the partner paths, naming one bound
/// to it; a direct merchant names none (more-wallets.md §7, the refusals WeChat Pay answers).
#[tokio::test]
async fn service_providers_must_name_a_sub_merchant_bound_to_them() {
    use common::{APIV3_KEY_SP, SP_APPID, SP_MCHID, SUB_APPID_G, SUB_MCHID_F, SUB_MCHID_G};
    let h = Harness::start().await;
    let provider = adapter_for(&h, SP_MCHID, APIV3_KEY_SP, true);
    let direct = adapter(&h);
    let post = |adapter: &WechatPayAdapter, path: &str, body: Value| {
        adapter
            .v3_request(&cx(0), HttpMethod::Post, path, Some(body.to_string()))
            .unwrap()
    };
    let partner_order = |no: &str, sub_mchid: &str| {
        json!({
            "sp_appid": SP_APPID, "sp_mchid": SP_MCHID, "sub_mchid": sub_mchid,
            "description": "Tea", "out_trade_no": no,
            "notify_url": "https://shop.example/notify", "amount": {"total": 100, "currency": "CNY"},
        })
    };
    let expect = |(response, body): (HttpResponse, Value), status: u16, code: &str, text: &str| {
        assert_eq!(
            (response.status, body["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
        assert!(body["message"].as_str().unwrap().contains(text), "{body}");
        assert_signed(&response);
    };
    // The provider on the direct path, with its own ids: it must name a sub-merchant.
    let own = json!({
        "appid": SP_APPID, "mchid": SP_MCHID, "description": "Tea", "out_trade_no": "sp_direct_1",
        "notify_url": "https://shop.example/notify", "amount": {"total": 100, "currency": "CNY"},
    });
    let answer = send(&h, &post(&provider, "/v3/pay/transactions/native", own)).await;
    expect(answer, 400, "PARAM_ERROR", "受理机构必须传入sub_mchid");
    // A sub-merchant not bound to it.
    let path = "/v3/pay/partner/transactions/native";
    let answer = send(
        &h,
        &post(&provider, path, partner_order("sp_order_1", "1900000299")),
    )
    .await;
    expect(answer, 403, "NO_AUTH", "受理关系不存在");
    // A sub_appid that is not the sub-merchant's, and a sub_openid without its sub_appid.
    let mut foreign_app = partner_order("sp_order_2", SUB_MCHID_F);
    foreign_app["sub_appid"] = json!(SUB_APPID_G);
    let answer = send(&h, &post(&provider, path, foreign_app)).await;
    expect(answer, 400, "INVALID_REQUEST", "sub_appid");
    let mut sub_openid = partner_order("sp_order_3", SUB_MCHID_F);
    sub_openid["payer"] = json!({"sub_openid": "o1"});
    let jsapi = "/v3/pay/partner/transactions/jsapi";
    let answer = send(&h, &post(&provider, jsapi, sub_openid)).await;
    expect(answer, 400, "PARAM_ERROR", "sub_appid");
    // A direct merchant on the partner path.
    let mut theirs = partner_order("sp_order_4", SUB_MCHID_F);
    theirs["sp_mchid"] = json!(MCHID_A);
    theirs["sp_appid"] = json!(WX_APPID);
    let answer = send(&h, &post(&direct, path, theirs)).await;
    expect(answer, 400, "PARAM_ERROR", "普通商户不允许传sub_mchid");

    // Placed for shop F's sub-merchant, the order is F's: the sibling cannot see it.
    let (response, body) = send(
        &h,
        &post(&provider, path, partner_order("sp_order_5", SUB_MCHID_F)),
    )
    .await;
    assert_eq!(response.status, 200, "{body}");
    let query = |sub_mchid: &str| {
        provider
            .v3_request(
                &cx(0),
                HttpMethod::Get,
                &format!(
                    "/v3/pay/partner/transactions/out-trade-no/sp_order_5?sp_mchid={SP_MCHID}&sub_mchid={sub_mchid}"
                ),
                None,
            )
            .unwrap()
    };
    let (response, body) = send(&h, &query(SUB_MCHID_F)).await;
    assert_eq!(response.status, 200, "{body}");
    assert_eq!(
        (&body["sp_mchid"], &body["sub_mchid"], &body["sp_appid"]),
        (&json!(SP_MCHID), &json!(SUB_MCHID_F), &json!(SP_APPID))
    );
    assert!(body.get("mchid").is_none(), "{body}");
    let (response, body) = send(&h, &query(SUB_MCHID_G)).await;
    assert_eq!(
        (response.status, body["code"].as_str()),
        (404, Some("ORDER_NOT_EXIST"))
    );
    // A refund must name the sub-merchant too.
    let refund = json!({
        "out_trade_no": "sp_order_5", "out_refund_no": "sp_refund_1",
        "amount": {"refund": 10, "total": 100, "currency": "CNY"},
    });
    let answer = send(&h, &post(&provider, "/v3/refund/domestic/refunds", refund)).await;
    expect(answer, 400, "PARAM_ERROR", "受理机构必须传入sub_mchid");
}

/// v2 `micropay` for a service provider: the sub-merchant it names (`sub_mch_id`) must be bound
/// to it, and the provider must name one.
#[tokio::test]
async fn a_providers_payment_code_names_a_sub_merchant_bound_to_it() {
    use common::{SP_APPID, SP_MCHID, SUB_MCHID_F, V2_KEY_SP};
    use moongate_adapter_wechatpay::{SubMerchant, v2};
    use moongate_contract::{
        CreatePayment, Currency, Money, Payer, PaymentAdapter, PaymentMethod, Prepared,
    };
    let h = Harness::start().await;
    let keys = fixtures().join("keys");
    let read = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
    let provider = WechatPayAdapter::new(&AccountKeys {
        mchid: SP_MCHID,
        appid: SP_APPID,
        merchant_serial_no: MERCHANT_SERIAL,
        merchant_private_key: &read("wechatpay-go-merchant-private-key.pem"),
        apiv3_key: common::APIV3_KEY_SP,
        api_v2_key: Some(V2_KEY_SP),
        wechatpay_public_key: None,
        platform_certificates: &[],
        api_base_url: &format!("http://{}", h.wechat_addr),
        oauth: None,
    })
    .unwrap();
    let charge = |adapter: &WechatPayAdapter, no: &str| {
        let request = CreatePayment {
            provider_order_id: no.to_owned(),
            amount: Money::new(100, Currency::CNY),
            method: PaymentMethod::WechatPaymentCode,
            subject: "Tea".to_owned(),
            description: None,
            return_url: None,
            notify_url: "http://127.0.0.1:9/notify".to_owned(),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(5),
            payer: Payer {
                payment_code: Some("134567890123456781".to_owned()),
                ..Payer::default()
            },
            created_at: time::OffsetDateTime::now_utc(),
        };
        let Prepared::Send(call) = adapter.prepare_create(&cx(0), &request).unwrap() else {
            panic!("a payment code is charged");
        };
        call
    };
    let answer = |response: HttpResponse| v2::from_xml(&response.body).unwrap();
    for (sub_mchid, no, message) in [
        (None, "sp_code_1", Some("受理机构必须传入sub_mch_id")),
        (Some("1900000299"), "sp_code_2", Some("受理关系不存在")),
        (Some(SUB_MCHID_F), "sp_code_3", None),
    ] {
        // The provider's own adapter names no sub-merchant.
        let served = sub_mchid.map(|sub_mchid| {
            provider.for_sub_merchant(SubMerchant {
                sub_mchid,
                sub_appid: None,
            })
        });
        let adapter = served.as_ref().unwrap_or(&provider);
        let fields = answer(h.http.send(&charge(adapter, no)).await.unwrap());
        match message {
            Some(message) => {
                assert_eq!(fields["return_code"], "FAIL", "{fields:?}");
                assert_eq!(fields["return_msg"], message, "{fields:?}");
            }
            None => {
                assert_eq!(fields["result_code"], "SUCCESS", "{fields:?}");
                assert_eq!(fields["sub_mch_id"], SUB_MCHID_F, "{fields:?}");
            }
        }
    }
}
