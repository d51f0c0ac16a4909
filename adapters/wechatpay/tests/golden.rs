//! Golden tests against the verified and derived WeChat Pay vectors of china-wallets.md
//! section D (D.1 #5–#8, D.2 #1 and #4), plus the outcome tables of section B.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use moongate_adapter_wechatpay::verify::{PlatformKeys, VerifyError};
use moongate_adapter_wechatpay::{AccountKeys, WechatPayAdapter, aead, sign, v2};
use moongate_contract::crypto::{Certificate, RsaSigner, RsaVerifier};
use moongate_contract::{
    AdapterError, CloseStatus, Currency, HttpMethod, HttpResponse, Money, NextAction,
    NotificationError, NotificationEvent, PaymentAdapter, PaymentMethod, PaymentRef, PaymentStatus,
    Prepared, RawNotification, RefundRequest, RefundStatus,
};

mod support;
use support::*;

const NOTIFY_CERT: &str = include_str!("../../../fixtures/wechatpay/wechatpay-go-notify-cert.pem");
const NOTIFY_BODY: &str = include_str!("../../../fixtures/wechatpay/notify-payscore.json");
const SANDBOX_CERT: &str =
    include_str!("../../../fixtures/keys/sandbox-wechatpay-platform-cert.pem");
const SANDBOX_CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
const APIV3_KEY: &str = "0123456789abcdef0123456789abcdef";
const V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

fn adapter_with(public_key: bool, certificate: bool, v2_key: bool) -> WechatPayAdapter {
    let certificates = if certificate {
        vec![SANDBOX_CERT.to_owned()]
    } else {
        Vec::new()
    };
    WechatPayAdapter::new(&AccountKeys {
        mchid: "1230000109",
        appid: "wxd678efh567hg6787",
        merchant_serial_no: "F5765756002FDD77",
        merchant_private_key: GO_KEY,
        apiv3_key: APIV3_KEY,
        api_v2_key: v2_key.then_some(V2_KEY),
        wechatpay_public_key: public_key.then_some((PUB_KEY_ID, SANDBOX_PUBLIC)),
        platform_certificates: &certificates,
        api_base_url: "https://api.mch.weixin.qq.com",
        oauth: None,
    })
    .unwrap()
}

fn adapter() -> WechatPayAdapter {
    adapter_with(true, false, true)
}

fn signature_of(authorization: &str) -> String {
    sign::parse_authorization(authorization).unwrap().signature
}

#[test]
fn d1_5_signer_vector() {
    let signer = RsaSigner::from_pem(GO_KEY).unwrap();
    assert_eq!(
        signer.sign_base64(b"source").unwrap(),
        "BKyAfU4iMCuvXMXS0Wzam3V/cnxZ+JaqigPM5OhljS2iOT95OO6Fsuml2JkFANJU9K6q9bLlDhPXuoVz+pp4hAm6pHU4ld815U4jsKu1RkyaII+1CYBUYC8TK0XtJ8FwUXXz8vZHh58rrAVN1XwNyvD1vfpxrMT4SL536GLwvpUHlCqIMzoZUguLli/K8V29QiOhuH6IEqLNJn8e9b3nwNcQ7be3CzYGpDAKBfDGPCqCv8Rw5zndhlffk2FEA70G4hvMwe51qMN/RAJbknXG23bSlObuTCN7Ndj1aJGH6/L+hdwfLpUtJm4QYVazzW7DFD27EpSQEqA8bX9+8m1rLg=="
    );
}

#[test]
fn d1_6_authorization_layout() {
    assert_eq!(
        sign::authorization("1234567890", NONCE, TS, "0123456789ABC", "Sign:x"),
        "WECHATPAY2-SHA256-RSA2048 mchid=\"1234567890\",nonce_str=\"A1B2C3D4E5F6G7\",timestamp=\"1624523846\",serial_no=\"0123456789ABC\",signature=\"Sign:x\""
    );
    assert_eq!(
        sign::request_message("GET", "/v3/certificates", TS, NONCE, ""),
        "GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n"
    );
}

#[test]
fn d2_1_request_signatures() {
    let adapter = adapter();
    let certificates = adapter
        .v3_request(&cx(), HttpMethod::Get, "/v3/certificates", None)
        .unwrap();
    assert_eq!(
        signature_of(header_value(&certificates.headers, "authorization")),
        "mG2drrUCDR7EVrJmQVI6eW5VlDB0zzpcYLC83UiNxe1aNAomazwWci4q/HPA7MmlbGAswwSE7iPiLy3vflXohf42WXNA031htDbpBCVt1ti2teKFPh531KK07unc+CrCiepz6veTgsylXYO4iBI+DYQ4UDj+r8A/lhqj7yHmtLjvcJ45Og6Wdecd/T7jGgMwcEe1mR7HLzC7R6snnLOaRwnPCe6WyiWGDHHuQzvNFeaztpM3noedCPEwGculoy2MPVvNER6TpM8CUijpKChWM7Q5vIwg8QYv9bH7IuZitLMAgx0+cgaNzFbzZuXxwGB6wIAmv70dWcQx8F2erR/Nzw=="
    );
    let reference = PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "1217752501201407033233368018".to_owned(),
        amount: Money::new(100, Currency::CNY),
    };
    let Prepared::Send(query) = adapter.prepare_query(&cx(), &reference).unwrap() else {
        panic!("a query is sent");
    };
    assert_eq!(
        query.url,
        "https://api.mch.weixin.qq.com/v3/pay/transactions/out-trade-no/1217752501201407033233368018?mchid=1230000109"
    );
    assert_eq!(
        signature_of(header_value(&query.headers, "authorization")),
        "BVQCEAgRmSQiYEEMdnH5XgJBoe0QcVGuZY5f1xh/ilsC1jPb/g+pb4ZNwIMD2gBbNub/v58pxP11I2bZatpmdLGYRZR+HgJof8814wC8RLBuzaAiX8js4Uf3mUxRYwi4fUlXTr7pLwzvoDuOD/+qB2qU2duQGIIBJrzUsvWwQKUymo+OPdafFnqvpRJ3RfjpVcWKKJa+q5gbZDI2/VOUK4s10OxJ/HAvNpBr+sdwk1qtbkhl3gK1tCAJlC2Ii+DKvIEdmOFO4hu5eAp4ckqpKJv591f2YD8Jg6RCiyO3OmDQPSLbAqHv8GoD/4Bb5YeSK9RK19OSv2qEOjPyEiO22Q=="
    );
    assert_eq!(header_value(&query.headers, "wechatpay-serial"), PUB_KEY_ID);
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"}}"#;
    let post = adapter
        .v3_request(
            &cx(),
            HttpMethod::Post,
            "/v3/pay/transactions/native",
            Some(body.to_owned()),
        )
        .unwrap();
    assert_eq!(post.body, body.as_bytes());
    assert_eq!(
        signature_of(header_value(&post.headers, "authorization")),
        "yydH5XPBobXDNZjFuTMwKJyEdcBPkXEFG4KqtnDq/RFg+alqTKpLF8kGjsPLe4ZTs8XAT4BETuOvKGRp9suZH55fREX4oy+P78uyIo68vJmnYZMle6+jOre625hGu7dBR4zLu+YIzX+sixs4+fKF/xsAQi0obHpBn0dV+qmXELFAldtloL52Dj0+ZA0x3KAcMehv9Bc6DqEQOzGNqzWWa5XDwLnlDHSFfx7i+UxJRQ2lo1ZdD6/jwjLfQsbnvd5G7fOC4EvGg26QDF6sqw+Nk0Fey7v6XmBh20HnNExXb3lGtKcw3JA8YhV+ohU5yDOOFk3+6tQOHeg0kJDL9S/riQ=="
    );
}

fn notify_headers(signature: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        Some(
            match name {
                "wechatpay-timestamp" => "1624523846",
                "wechatpay-nonce" => "EcZ9Cmy4Xyx1i6RlJQzLcCyEqDa26NBz",
                "wechatpay-serial" => "D7CE59D1F522D701",
                "wechatpay-signature" => signature,
                _ => return None,
            }
            .to_owned(),
        )
    }
}

const NOTIFY_SIGNATURE: &str = "tJHIiIS9eB2hAYstmAmbbD3ZE5LiIm/Ug5tuL4fC0YOFRWIHV39UFIZXC0e9Wl6lBu6sKvkqDkzpqzBsVHyXFlbYZTOQrVdG4b6LfTnK4mikv9++ixJMd3vTf2yCqvBkh98zs3Ds5zsYQakzbcwhmw4fMJs4nPLws28H0UW9FjDR//rxELLwXvV1VEA1IBLX70xptjL8hrfUjEE8kkry6yNJTHZRU8CAc7qHli2Ng1V1qb9ARbK8A3ThmFmPQvRGrapI/jS2laKKgYUmfdEdkNO6B2Cke5e8VTxY406ArAmQ90GAihDwIcb16TQMnzCMBoutnwZKNiKRACrFmtxw2Q==";

#[test]
fn d1_7_notification_signature_and_decryption() {
    let certificate = Certificate::from_pem(NOTIFY_CERT).unwrap();
    assert_eq!(certificate.serial_hex, "D7CE59D1F522D701");
    assert_eq!(certificate.not_after, "310425085523Z");
    assert_eq!(certificate.not_after_unix(), Some(1934873723));
    let keys = PlatformKeys::new().with_certificate("d7ce59d1f522d701", certificate.verifier);
    let body = NOTIFY_BODY.as_bytes();
    keys.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS))
        .unwrap();
    // One byte changed, or the body re-serialised, breaks it.
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(body).unwrap()).unwrap();
    assert_ne!(reserialised, body);
    assert_eq!(
        keys.verify(notify_headers(NOTIFY_SIGNATURE), &reserialised, at(TS)),
        Err(VerifyError::Mismatch)
    );
    let envelope: serde_json::Value = serde_json::from_slice(body).unwrap();
    let resource = &envelope["resource"];
    let plain = aead::decrypt(
        b"testMchAPIv3Key0",
        resource["nonce"].as_str().unwrap(),
        resource["associated_data"].as_str().unwrap(),
        resource["ciphertext"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(plain).unwrap(),
        r#"{"mchid":"1234567890","appid":"054aa7d7a2a54ab5898df65bd96f001c","create_time":"2020-06-30T12:12:00+08:00","out_contract_code":"21640bdbd08e473e828f3206a2741c6e"}"#
    );
}

#[test]
fn stale_probe_and_unknown_serial_signatures_are_refused() {
    let certificate = Certificate::from_pem(NOTIFY_CERT).unwrap();
    let keys = PlatformKeys::new().with_certificate(&certificate.serial_hex, certificate.verifier);
    let body = NOTIFY_BODY.as_bytes();
    // The window is strictly less than 300 seconds either way (Go: >= FiveMinute fails).
    keys.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS + 299))
        .unwrap();
    keys.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS - 299))
        .unwrap();
    assert_eq!(
        keys.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS + 300)),
        Err(VerifyError::Stale)
    );
    assert_eq!(
        keys.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS - 300)),
        Err(VerifyError::Stale)
    );
    let probe = format!("WECHATPAY/SIGNTEST/{NOTIFY_SIGNATURE}");
    assert_eq!(
        keys.verify(notify_headers(&probe), body, at(TS)),
        Err(VerifyError::Probe)
    );
    let other = PlatformKeys::new()
        .with_public_key(PUB_KEY_ID, RsaVerifier::from_pem(SANDBOX_PUBLIC).unwrap());
    assert!(matches!(
        other.verify(notify_headers(NOTIFY_SIGNATURE), body, at(TS)),
        Err(VerifyError::UnknownSerial(_))
    ));
}

const D2_4_PLAIN: &str = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018","transaction_id":"4200000000000000000000000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2024-05-13T17:49:20+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;
const D2_4_CIPHERTEXT: &str = "DUcegK33A8MEOgdJt8PWwAdrzVDy3c3BTENCdjZ/7K2gbkFM2sU/cZ/UPNrLir4DXaSrqBdzgGy/sMCWIPKVQdMoXpY4xG4iYhF7TH0MBs4T7FaM9hoFjn/sa9TCWtjLTRzZiknVkW9IXW37a35VmVaeZyQYgusGnnisNS4C5dQEMLenoEF4L3PO4m3uteG+aMmWJMtSbZltG3H2Cu2Vpv+cqnyyGHLFevoxkLhsHY8XPi0+gkQtq7BpfOJiSEHy+Tzi+aGqosa8KxEMMuGWEW91xP679gDrMCnQbv7+qi5TWa6XKIPVFYDP19uWymICIT4D3HJk530j6t/m20u9MxziVUgov6XnO6mUQwF3pBlwTgexb3JVSI2KQmrqh9RYqB7/ZQZzJOYBcg4HyHxnT0U5jDEnaexLsuz2pBMA7TpMmnDm9odMhSmUoPf4jNhnjIgKZ1BX8qVC5shILgKPTuxL4jB1ROLpEQKOxynN5pUI3jzN3f8iZmrAcgAGcf5/Vwl9jqw6gwwtdHXBbF09SgGwHfw2awQO8lGe2cr9GTBcMpxOxcv4YoBLv2UowQgmPPm/K9N4Ati810QcjcRcTA==";

#[test]
fn d2_4_aes_256_gcm() {
    let plain = aead::decrypt(
        APIV3_KEY.as_bytes(),
        "fdasflkja484",
        "transaction",
        D2_4_CIPHERTEXT,
    )
    .unwrap();
    assert_eq!(plain, D2_4_PLAIN.as_bytes());
    assert_eq!(
        aead::encrypt(
            APIV3_KEY.as_bytes(),
            "fdasflkja484",
            "transaction",
            D2_4_PLAIN.as_bytes()
        )
        .unwrap(),
        D2_4_CIPHERTEXT
    );
}

#[test]
fn d1_8_v2_hmac_sha256() {
    let fields: std::collections::BTreeMap<String, String> = [
        ("appid", "wxd930ea5d5a258f4f"),
        ("mch_id", "10000100"),
        ("device_info", "1000"),
        ("body", "test"),
        ("nonce_str", "ibuaiVcKdpRxkhJA"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(
        v2::sign_string(&fields, V2_KEY),
        "appid=wxd930ea5d5a258f4f&body=test&device_info=1000&mch_id=10000100&nonce_str=ibuaiVcKdpRxkhJA&key=192006250b4c09247ec02edce69f6a2d"
    );
    let sign = v2::hmac_sha256_sign(&fields, V2_KEY);
    assert_eq!(
        sign,
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    );
    let mut signed = fields.clone();
    signed.insert("sign".into(), sign);
    assert!(v2::verify_hmac_sha256(&signed, V2_KEY));
    signed.insert("body".into(), "tost".into());
    assert!(!v2::verify_hmac_sha256(&signed, V2_KEY));
}

#[test]
fn order_bodies_follow_the_products() {
    let adapter = adapter();
    let Prepared::Send(native) = adapter
        .prepare_create(&cx(), &create(PaymentMethod::WechatNative))
        .unwrap()
    else {
        panic!("sent");
    };
    assert_eq!(
        native.url,
        "https://api.mch.weixin.qq.com/v3/pay/transactions/native"
    );
    assert_eq!(
        String::from_utf8(native.body).unwrap(),
        r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","time_expire":"2021-06-24T17:37:26+08:00","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"}}"#
    );
    let Prepared::Send(jsapi) = adapter
        .prepare_create(&cx(), &create(PaymentMethod::WechatJsapi))
        .unwrap()
    else {
        panic!("sent");
    };
    assert!(String::from_utf8(jsapi.body).unwrap().ends_with(
        r#""amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#
    ));
    let Prepared::Send(h5) = adapter
        .prepare_create(&cx(), &create(PaymentMethod::WechatH5))
        .unwrap()
    else {
        panic!("sent");
    };
    assert!(
        String::from_utf8(h5.body).unwrap().ends_with(
            r#""scene_info":{"payer_client_ip":"203.0.113.7","h5_info":{"type":"Wap"}}}"#
        )
    );
    let mut no_openid = create(PaymentMethod::WechatJsapi);
    no_openid.payer.openid = None;
    assert!(matches!(
        adapter.prepare_create(&cx(), &no_openid),
        Err(AdapterError::InvalidParameter {
            param: "payer.openid",
            ..
        })
    ));
    let mut usd = create(PaymentMethod::WechatNative);
    usd.amount = Money::new(100, Currency::parse("USD").unwrap());
    assert!(matches!(
        adapter.prepare_create(&cx(), &usd),
        Err(AdapterError::InvalidParameter {
            param: "currency",
            ..
        })
    ));
}

#[test]
fn create_answers_become_next_actions() {
    let adapter = adapter();
    let native = adapter
        .parse_create(
            &cx(),
            &create(PaymentMethod::WechatNative),
            &signed(
                200,
                r#"{"code_url":"weixin://wxpay/bizpayurl?pr=NwY5Mz9&groupid=00"}"#,
                PUB_KEY_ID,
                TS,
            ),
        )
        .unwrap();
    assert_eq!(
        native,
        PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::DisplayQr {
                qr_data: "weixin://wxpay/bizpayurl?pr=NwY5Mz9&groupid=00".into()
            })
        }
    );
    let jsapi = adapter
        .parse_create(
            &cx(),
            &create(PaymentMethod::WechatJsapi),
            &signed(
                200,
                r#"{"prepay_id":"wx201410272009395522657a690389285100"}"#,
                PUB_KEY_ID,
                TS,
            ),
        )
        .unwrap();
    let PaymentStatus::AwaitingPayment {
        next_action: Some(NextAction::WechatJsapi { parameters }),
    } = jsapi
    else {
        panic!("jsapi parameters expected");
    };
    assert_eq!(
        parameters.package,
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(
        (
            parameters.time_stamp.as_str(),
            parameters.nonce_str.as_str(),
            parameters.sign_type.as_str()
        ),
        ("1624523846", NONCE, "RSA")
    );
    let merchant_public = RsaVerifier::from_pem(include_str!(
        "../../../fixtures/keys/wechatpay-go-merchant-public-key.pem"
    ))
    .unwrap();
    assert!(
        merchant_public.verify_base64(
            sign::jsapi_message(
                "wxd678efh567hg6787",
                "1624523846",
                NONCE,
                &parameters.package
            )
            .as_bytes(),
            &parameters.pay_sign
        )
    );
    // Unsigned, wrongly signed or stale 200s are never trusted.
    let mut unsigned = signed(200, r#"{"code_url":"weixin://x"}"#, PUB_KEY_ID, TS);
    unsigned
        .headers
        .retain(|(k, _)| !k.starts_with("wechatpay-"));
    let mut tampered = signed(200, r#"{"code_url":"weixin://x"}"#, PUB_KEY_ID, TS);
    tampered.body = br#"{"code_url":"weixin://y"}"#.to_vec();
    let mut stale = signed(200, r#"{"code_url":"weixin://x"}"#, PUB_KEY_ID, TS);
    stale.received_at = at(TS + 301);
    for resp in [unsigned, tampered, stale] {
        assert!(matches!(
            adapter.parse_create(&cx(), &create(PaymentMethod::WechatNative), &resp),
            Err(AdapterError::Protocol(_))
        ));
    }
}

fn error(status: u16, code: &str) -> HttpResponse {
    signed(
        status,
        &format!(r#"{{"code":"{code}","message":"m"}}"#),
        PUB_KEY_ID,
        TS,
    )
}

#[test]
fn http_error_codes_map_to_outcomes() {
    let adapter = adapter();
    let native = create(PaymentMethod::WechatNative);
    let outcome = |resp: HttpResponse| adapter.parse_create(&cx(), &native, &resp);
    assert!(matches!(
        outcome(error(400, "PARAM_ERROR")),
        Err(AdapterError::Rejected { .. })
    ));
    assert!(matches!(
        outcome(error(401, "SIGN_ERROR")),
        Err(AdapterError::Rejected { .. })
    ));
    assert!(matches!(
        outcome(error(403, "NO_AUTH")),
        Ok(PaymentStatus::Failed { .. })
    ));
    assert!(matches!(
        outcome(error(404, "MCH_NOT_EXISTS")),
        Err(AdapterError::Rejected { .. })
    ));
    assert!(matches!(
        outcome(error(429, "RATELIMIT_EXCEEDED")),
        Err(AdapterError::Rejected { .. })
    ));
    assert!(matches!(
        outcome(error(500, "SYSTEM_ERROR")),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        outcome(error(502, "SERVICE_UNAVAILABLE")),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        outcome(error(400, "ORDERPAID")),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        outcome(signed(202, "", PUB_KEY_ID, TS)),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        outcome(signed(500, "<html>", PUB_KEY_ID, TS)),
        Err(AdapterError::Protocol(_))
    ));
    let reference = PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: native.provider_order_id.clone(),
        amount: native.amount,
    };
    assert_eq!(
        adapter
            .parse_query(&reference, &error(404, "ORDER_NOT_EXIST"))
            .unwrap(),
        PaymentStatus::NotFound
    );
    assert_eq!(
        adapter
            .parse_close(&reference, &signed(204, "", PUB_KEY_ID, TS))
            .unwrap(),
        CloseStatus::Closed
    );
    assert_eq!(
        adapter
            .parse_close(&reference, &error(400, "ORDERPAID"))
            .unwrap(),
        CloseStatus::Conflict {
            code: "ORDERPAID".into()
        }
    );
}

fn query_body(state: &str) -> String {
    format!(
        r#"{{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"1217752501201407033233368018","transaction_id":"4200000000000000000000000001","trade_type":"NATIVE","trade_state":"{state}","trade_state_desc":"d","success_time":"2024-05-13T17:49:20+08:00","amount":{{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}}}"#
    )
}

#[test]
fn every_trade_state_maps_and_unknown_is_never_paid() {
    let adapter = adapter();
    let reference = PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "1217752501201407033233368018".into(),
        amount: Money::new(100, Currency::CNY),
    };
    let state = |s: &str| {
        adapter
            .parse_query(&reference, &signed(200, &query_body(s), PUB_KEY_ID, TS))
            .unwrap()
    };
    assert!(
        matches!(state("SUCCESS"), PaymentStatus::Succeeded { amount, .. } if amount.minor == 100)
    );
    assert!(matches!(state("REFUND"), PaymentStatus::Succeeded { .. }));
    for waiting in ["NOTPAY", "USERPAYING", "ACCEPT"] {
        assert_eq!(
            state(waiting),
            PaymentStatus::AwaitingPayment { next_action: None }
        );
    }
    assert_eq!(state("CLOSED"), PaymentStatus::Closed);
    assert_eq!(state("REVOKED"), PaymentStatus::Closed);
    assert!(matches!(state("PAYERROR"), PaymentStatus::Failed { .. }));
    assert_eq!(
        state("PAID_MAYBE"),
        PaymentStatus::Unrecognized("PAID_MAYBE".into())
    );
    let other_order = query_body("SUCCESS").replace("1217752501201407033233368018", "9999999999");
    assert!(
        adapter
            .parse_query(&reference, &signed(200, &other_order, PUB_KEY_ID, TS))
            .is_err()
    );
}

fn refund_request() -> RefundRequest {
    RefundRequest {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        payment_created_at: time::OffsetDateTime::UNIX_EPOCH,
        payment_provider_ref: None,
        provider_order_id: "1217752501201407033233368018".into(),
        provider_refund_id: "re_000000000000000000000001".into(),
        amount: Money::new(40, Currency::CNY),
        payment_amount: Money::new(100, Currency::CNY),
        reason: Some("size".into()),
        notify_url: Some("https://example.com/notify".into()),
    }
}

#[test]
fn refunds_and_refund_states() {
    let adapter = adapter();
    let Prepared::Send(request) = adapter.prepare_refund(&cx(), &refund_request()).unwrap() else {
        panic!("sent");
    };
    assert_eq!(
        request.url,
        "https://api.mch.weixin.qq.com/v3/refund/domestic/refunds"
    );
    assert_eq!(
        String::from_utf8(request.body).unwrap(),
        r#"{"out_trade_no":"1217752501201407033233368018","out_refund_no":"re_000000000000000000000001","reason":"size","notify_url":"https://example.com/notify","amount":{"refund":40,"total":100,"currency":"CNY"}}"#
    );
    let answer = |status: &str| {
        format!(
            r#"{{"refund_id":"50000000382019052709732678859","out_refund_no":"re_000000000000000000000001","status":"{status}","amount":{{"refund":40,"total":100,"currency":"CNY"}}}}"#
        )
    };
    let parse =
        |s: &str| adapter.parse_refund(&refund_request(), &signed(200, &answer(s), PUB_KEY_ID, TS));
    assert!(matches!(
        parse("SUCCESS"),
        Ok(RefundStatus::Succeeded { .. })
    ));
    assert_eq!(parse("PROCESSING").unwrap(), RefundStatus::Processing);
    assert_eq!(parse("ABNORMAL").unwrap(), RefundStatus::Processing);
    assert!(matches!(parse("CLOSED"), Ok(RefundStatus::Failed { .. })));
    assert!(matches!(
        parse("WHATEVER"),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        adapter.parse_refund(&refund_request(), &error(403, "NOT_ENOUGH")),
        Ok(RefundStatus::Failed { .. })
    ));
    assert!(matches!(
        adapter.parse_refund(&refund_request(), &error(500, "SYSTEM_ERROR")),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert_eq!(
        adapter
            .parse_refund_query(&refund_request(), &error(404, "RESOURCE_NOT_EXISTS"))
            .unwrap(),
        RefundStatus::NotFound
    );
}

#[test]
fn payment_notifications_in_every_key_mode() {
    let (cert_headers, cert_body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        D2_4_PLAIN,
        APIV3_KEY,
        SANDBOX_CERT_SERIAL,
    );
    let (key_headers, key_body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        D2_4_PLAIN,
        APIV3_KEY,
        PUB_KEY_ID,
    );
    let public_only = adapter_with(true, false, false);
    let certificate_only = adapter_with(false, true, false);
    let mixed = adapter_with(true, true, false);
    for (adapter, headers, body, ok) in [
        (&public_only, &key_headers, &key_body, true),
        (&public_only, &cert_headers, &cert_body, false),
        (&certificate_only, &cert_headers, &cert_body, true),
        (&certificate_only, &key_headers, &key_body, false),
        (&mixed, &key_headers, &key_body, true),
        (&mixed, &cert_headers, &cert_body, true),
    ] {
        let result = adapter.parse_notification(&raw(headers, body));
        if ok {
            let note = result.unwrap();
            assert_eq!(note.dedupe_id, "EV-2018022511223320873");
            assert_eq!(note.total, Some(Money::new(100, Currency::CNY)));
            assert!(matches!(
                note.event,
                NotificationEvent::Payment {
                    status: PaymentStatus::Succeeded { .. },
                    ..
                }
            ));
        } else {
            assert_eq!(result.unwrap_err(), NotificationError::BadSignature);
        }
    }
}

#[test]
fn notifications_with_a_wrong_key_account_or_probe_are_refused() {
    let adapter = adapter();
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        D2_4_PLAIN,
        "ffffffffffffffffffffffffffffffff",
        PUB_KEY_ID,
    );
    assert_eq!(
        adapter
            .parse_notification(&raw(&headers, &body))
            .unwrap_err(),
        NotificationError::Undecryptable
    );
    let other = D2_4_PLAIN.replace("1230000109", "1900000109");
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        &other,
        APIV3_KEY,
        PUB_KEY_ID,
    );
    assert_eq!(
        adapter
            .parse_notification(&raw(&headers, &body))
            .unwrap_err(),
        NotificationError::WrongAccount
    );
    let (mut headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        D2_4_PLAIN,
        APIV3_KEY,
        PUB_KEY_ID,
    );
    for (name, value) in headers.iter_mut() {
        if name == "wechatpay-signature" {
            *value = format!("WECHATPAY/SIGNTEST/{value}");
        }
    }
    assert_eq!(
        adapter
            .parse_notification(&raw(&headers, &body))
            .unwrap_err(),
        NotificationError::BadSignature
    );
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        D2_4_PLAIN,
        APIV3_KEY,
        PUB_KEY_ID,
    );
    let late = RawNotification {
        received_at: at(TS + 400),
        ..raw(&headers, &body)
    };
    assert_eq!(
        adapter.parse_notification(&late).unwrap_err(),
        NotificationError::Stale
    );
}

#[test]
fn refund_notifications() {
    let adapter = adapter();
    let plain = r#"{"mchid":"1230000109","transaction_id":"4200000000000000000000000001","out_trade_no":"1217752501201407033233368018","refund_id":"50000000382019052709732678859","out_refund_no":"re_000000000000000000000001","refund_status":"SUCCESS","success_time":"2024-05-13T18:00:00+08:00","user_received_account":"支付用户零钱","amount":{"total":100,"refund":40,"payer_total":100,"payer_refund":40}}"#;
    let (headers, body) = notification("REFUND.SUCCESS", "refund", plain, APIV3_KEY, PUB_KEY_ID);
    let note = adapter.parse_notification(&raw(&headers, &body)).unwrap();
    assert_eq!(note.total, Some(Money::new(100, Currency::CNY)));
    assert_eq!(
        note.event,
        NotificationEvent::Refund {
            provider_refund_id: "re_000000000000000000000001".into(),
            amount: Money::new(40, Currency::CNY),
            status: RefundStatus::Succeeded {
                provider_ref: Some("50000000382019052709732678859".into())
            },
        }
    );
    let ack = adapter.notification_ack(moongate_contract::AckKind::Accepted);
    assert_eq!((ack.status, ack.body.len()), (204, 0));
    let nack = adapter.notification_ack(moongate_contract::AckKind::Rejected);
    assert_eq!(nack.status, 500);
    assert_eq!(nack.body, r#"{"code":"FAIL","message":"失败"}"#.as_bytes());
}

fn v2_answer(fields: &[(&str, &str)]) -> HttpResponse {
    let mut map: std::collections::BTreeMap<String, String> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let sign = v2::hmac_sha256_sign(&map, V2_KEY);
    map.insert("sign".into(), sign);
    HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: v2::to_xml(map.iter().map(|(k, v)| (k.as_str(), v.as_str()))).into_bytes(),
        received_at: at(TS),
    }
}

#[test]
fn micropay_request_and_answers() {
    let adapter = adapter();
    let payment = create(PaymentMethod::WechatPaymentCode);
    let Prepared::Send(request) = adapter.prepare_create(&cx(), &payment).unwrap() else {
        panic!("sent");
    };
    assert_eq!(request.url, "https://api.mch.weixin.qq.com/pay/micropay");
    let fields = v2::from_xml(&request.body).unwrap();
    assert!(v2::verify_hmac_sha256(&fields, V2_KEY));
    assert_eq!(fields["auth_code"], "134567890123456789");
    assert_eq!(fields["total_fee"], "100");
    assert_eq!(fields["sign_type"], "HMAC-SHA256");
    let base = [
        ("return_code", "SUCCESS"),
        ("appid", "wxd678efh567hg6787"),
        ("mch_id", "1230000109"),
        ("nonce_str", "x"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        adapter.parse_create(&cx(), &payment, &v2_answer(&all))
    };
    assert!(matches!(
        with(&[("result_code", "SUCCESS"), ("out_trade_no", "1217752501201407033233368018"), ("total_fee", "100"), ("transaction_id", "4200000000000000000000000002"), ("time_end", "20210624163726")]),
        Ok(PaymentStatus::Succeeded { amount, paid_at: Some(_), .. }) if amount.minor == 100
    ));
    assert_eq!(
        with(&[("result_code", "FAIL"), ("err_code", "USERPAYING")]).unwrap(),
        PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::AwaitShopperConfirmation)
        }
    );
    assert!(matches!(
        with(&[("result_code", "FAIL"), ("err_code", "SYSTEMERROR")]),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        with(&[("result_code", "FAIL"), ("err_code", "AUTH_CODE_INVALID")]),
        Ok(PaymentStatus::Failed { .. })
    ));
    assert!(matches!(
        with(&[("result_code", "FAIL"), ("err_code", "BRAND_NEW_CODE")]),
        Err(AdapterError::Indeterminate { .. })
    ));
    let mut forged = v2_answer(&[("return_code", "SUCCESS"), ("result_code", "SUCCESS")]);
    forged.body = String::from_utf8(forged.body)
        .unwrap()
        .replace("SUCCESS]]></result", "SUCCESS ]]></result")
        .into_bytes();
    assert!(matches!(
        adapter.parse_create(&cx(), &payment, &forged),
        Err(AdapterError::Protocol(_))
    ));
    let refused = HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: b"<xml><return_code><![CDATA[FAIL]]></return_code><return_msg><![CDATA[\xe7\xad\xbe\xe5\x90\x8d\xe9\x94\x99\xe8\xaf\xaf]]></return_msg></xml>".to_vec(),
        received_at: at(TS),
    };
    assert!(matches!(
        adapter.parse_create(&cx(), &payment, &refused),
        Err(AdapterError::Rejected { .. })
    ));
    // Without a v2 key the method is not offered at all.
    let no_v2 = adapter_with(true, false, false);
    assert!(
        !no_v2
            .capabilities()
            .supports_method(PaymentMethod::WechatPaymentCode)
    );
    assert!(matches!(
        no_v2.prepare_create(&cx(), &payment),
        Err(AdapterError::Unsupported { .. })
    ));
}

const BILL: &[u8] = include_bytes!("../../../fixtures/wechatpay/bill.ALL.csv");

#[test]
fn trade_bill_parses_by_header_names_into_integers() {
    use moongate_adapter_wechatpay::bill::parse_trade_bill;
    let bill = parse_trade_bill(BILL).unwrap();
    assert_eq!(bill.rows.len(), 2);
    let paid = &bill.rows[0];
    assert_eq!(paid.trade_time, "2019-02-19 01:52:32");
    assert_eq!(paid.mchid, "1921000401");
    assert_eq!(paid.transaction_id, "4200000263201902167700134902");
    assert_eq!(paid.out_trade_no, "autotest_20190219015232_89201");
    assert_eq!(
        (paid.trade_type.as_str(), paid.trade_state.as_str()),
        ("NATIVE", "SUCCESS")
    );
    assert_eq!(
        (paid.settlement_total, paid.refund, paid.fee_e5),
        (3, 0, 1000)
    );
    assert_eq!(paid.out_refund_no, None);
    let refund = &bill.rows[1];
    assert_eq!(refund.trade_state, "REFUND");
    assert_eq!((refund.settlement_total, refund.refund), (0, 1));
    assert_eq!(
        refund.out_refund_no.as_deref(),
        Some("REF4200000263201902167700963919")
    );
    assert_eq!(refund.refund_state.as_deref(), Some("SUCCESS"));
    assert_eq!(bill.summary.records, 2);
    assert_eq!(
        (
            bill.summary.settlement_total,
            bill.summary.refund_total,
            bill.summary.fee_total_e5
        ),
        (3, 1, 1000)
    );
}

#[test]
fn a_bill_that_does_not_add_up_or_is_cut_is_refused_whole() {
    use moongate_adapter_wechatpay::bill::parse_trade_bill;
    let text = String::from_utf8(BILL.to_vec()).unwrap();
    // A record dropped: the summary no longer matches.
    let lines: Vec<&str> = text.split("\r\n").collect();
    let dropped = [lines[0], lines[1], lines[3], lines[4], ""].join("\r\n");
    let error = parse_trade_bill(dropped.as_bytes()).unwrap_err();
    assert!(error.message.contains("summary does not match"), "{error}");
    // Cut before the summary.
    let cut = [lines[0], lines[1], lines[2]].join("\r\n");
    assert!(parse_trade_bill(cut.as_bytes()).is_err());
    // An amount altered.
    let altered = text.replace("`0.03,`0.00,`0,`0", "`0.04,`0.00,`0,`0");
    assert!(parse_trade_bill(altered.as_bytes()).is_err());
    // Without the BOM and with LF lines it still reads (some tools re-save files so).
    let plain = text.trim_start_matches('\u{feff}').replace("\r\n", "\n");
    assert_eq!(parse_trade_bill(plain.as_bytes()).unwrap().rows.len(), 2);
    assert!(parse_trade_bill(b"\xff\xfe").is_err());
    assert!(parse_trade_bill(b"").is_err());
}

#[test]
fn trade_bill_records_become_statement_lines() {
    use moongate_adapter_wechatpay::bill::{parse_trade_bill, statement_line};
    use moongate_contract::LineKind;
    let bill = parse_trade_bill(BILL).unwrap();
    let paid = statement_line(&bill.rows[0].as_row_ref(), 2);
    assert_eq!(paid.kind, LineKind::Payment);
    assert!(paid.settled);
    assert_eq!(paid.amount, 3); // 订单金额
    assert_eq!(paid.fee_milli, 1000); // 0.01000 yuan = one fen
    assert_eq!(paid.payment_id, "autotest_20190219015232_89201");
    assert_eq!(
        paid.completed_at,
        moongate_contract::statement::parse_beijing_datetime("2019-02-19 01:52:32")
    );
    let refund = statement_line(&bill.rows[1].as_row_ref(), 3);
    assert_eq!(refund.kind, LineKind::Refund);
    assert!(refund.settled);
    assert_eq!(refund.amount, 1); // 申请退款金额
    assert_eq!(
        refund.refund_id.as_deref(),
        Some("REF4200000263201902167700963919")
    );
    assert_eq!(
        refund.provider_refund_id.as_deref(),
        Some("50000709672019011908420787722")
    );
    assert_eq!(refund.fee_milli, 0);
}

#[test]
fn trade_bill_requests_and_answers() {
    use moongate_contract::StatementLocation;
    let adapter = adapter();
    let day = time::macros::date!(2026 - 11 - 21);
    let request = adapter.prepare_statement(&cx(), day).unwrap();
    assert!(
        request
            .url
            .ends_with("/v3/bill/tradebill?bill_date=2026-11-21&bill_type=ALL"),
        "{}",
        request.url
    );
    // The signed answer names the file and its SHA-1.
    let body = r#"{"hash_type":"SHA1","hash_value":"79BB0F45FC9B3B2E0DAE8C1B9A8D8E2FDE3B0C6A","download_url":"https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO"}"#;
    let location = adapter
        .parse_statement(&signed(200, body, PUB_KEY_ID, TS))
        .unwrap();
    assert_eq!(
        location,
        StatementLocation::Download {
            url: "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO".to_owned(),
            sha1: Some("79bb0f45fc9b3b2e0dae8c1b9a8d8e2fde3b0c6a".to_owned()),
        }
    );
    // Unsigned success is unusable; the documented 400s are "empty" and "not yet".
    let mut unsigned = signed(200, body, PUB_KEY_ID, TS);
    unsigned.headers.retain(|(k, _)| k != "wechatpay-signature");
    assert!(matches!(
        adapter.parse_statement(&unsigned),
        Err(AdapterError::Protocol(_))
    ));
    assert_eq!(
        adapter.parse_statement(&error(400, "NO_STATEMENT_EXIST")),
        Ok(StatementLocation::Empty)
    );
    assert_eq!(
        adapter.parse_statement(&error(400, "STATEMENT_CREATING")),
        Ok(StatementLocation::NotReady {
            code: "STATEMENT_CREATING".to_owned()
        })
    );
    assert!(matches!(
        adapter.parse_statement(&error(400, "INVALID_REQUEST")),
        Err(AdapterError::Rejected { .. })
    ));
    // The download is signed over its own path and query, and only on the API host.
    let download = adapter
        .prepare_statement_download(
            &cx(),
            "https://api.mch.weixin.qq.com/v3/billdownload/file?token=abc",
        )
        .unwrap();
    let authorization = header_value(&download.headers, "authorization");
    let expected = sign::request_message("GET", "/v3/billdownload/file?token=abc", TS, NONCE, "");
    let verifier = moongate_contract::crypto::RsaVerifier::from_pem(include_str!(
        "../../../fixtures/keys/wechatpay-go-merchant-public-key.pem"
    ))
    .unwrap();
    assert!(verifier.verify_base64(expected.as_bytes(), &signature_of(authorization)));
    assert!(
        adapter
            .prepare_statement_download(
                &cx(),
                "https://evil.example/v3/billdownload/file?token=abc"
            )
            .is_err()
    );
}

#[test]
fn the_older_24_column_bill_reads_by_its_own_names() {
    use moongate_adapter_wechatpay::bill::{parse_trade_bill, statement_line};
    // The pre-2019 layout (binarywang/WxJava issue #1275): 总金额, 子商户号, a 5-column summary.
    let bill = "\u{feff}交易时间,公众账号ID,商户号,子商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,总金额,代金券或立减优惠金额,微信退款单号,商户退款单号,退款金额,代金券或立减优惠退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\r\n\
`2017-12-01 10:00:00,`wx2421b1c4370ec43b,`10000100,`0,`,`4200000001201712010000000001,`old_1,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`CMB_DEBIT,`CNY,`12.50,`0.00,`0,`0,`0.00,`0.00,`,`,`tea,`,`0.07500,`0.60%\r\n\
总交易单数,总交易额,总退款金额,总代金券或立减优惠退款金额,手续费总金额\r\n\
`1,`12.50,`0.00,`0.00,`0.07500\r\n";
    let parsed = parse_trade_bill(bill.as_bytes()).unwrap();
    assert_eq!(parsed.rows.len(), 1);
    let line = statement_line(&parsed.rows[0].as_row_ref(), 2);
    assert_eq!(line.amount, 1250); // 总金额, since there is no 订单金额 column
    assert_eq!(line.fee_milli, 7500);
    assert_eq!(line.payment_id, "old_1");
    assert_eq!(parsed.summary.settlement_total, 1250);
}
