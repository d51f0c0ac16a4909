//! What the adapter's test files share: the test keys, a fixed clock, answers and
//! notifications signed by the sandbox's platform key.
#![allow(dead_code, clippy::unwrap_used)]

use moongate_adapter_wechatpay::{aead, sign};
use moongate_contract::crypto::RsaSigner;
use moongate_contract::{
    CallContext, CreatePayment, Currency, HttpResponse, Money, Payer, PaymentMethod,
    RawNotification,
};
use time::OffsetDateTime;

pub const GO_KEY: &str =
    include_str!("../../../../fixtures/keys/wechatpay-go-merchant-private-key.pem");
pub const SANDBOX_KEY: &str =
    include_str!("../../../../fixtures/keys/sandbox-wechatpay-private-key.pem");
pub const SANDBOX_PUBLIC: &str =
    include_str!("../../../../fixtures/keys/sandbox-wechatpay-public-key.pem");
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0112300001092026112200000000000001";
pub const TS: i64 = 1624523846;
pub const NONCE: &str = "A1B2C3D4E5F6G7";

pub fn at(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).unwrap()
}

pub fn cx() -> CallContext {
    CallContext {
        now: at(TS),
        nonce: NONCE.to_owned(),
    }
}

pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap()
}

/// A response or notification signed by the sandbox platform key.
pub fn signed(status: u16, body: &str, serial: &str, ts: i64) -> HttpResponse {
    let signer = RsaSigner::from_pem(SANDBOX_KEY).unwrap();
    let nonce = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS";
    let message = sign::response_message(&ts.to_string(), nonce, body.as_bytes());
    let signature = signer.sign_base64(&message).unwrap();
    HttpResponse {
        status,
        headers: vec![
            ("request-id".into(), "08F78BB5AF0610D302".into()),
            ("wechatpay-timestamp".into(), ts.to_string()),
            ("wechatpay-nonce".into(), nonce.into()),
            ("wechatpay-serial".into(), serial.into()),
            ("wechatpay-signature".into(), signature),
            (
                "wechatpay-signature-type".into(),
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ],
        body: body.as_bytes().to_vec(),
        received_at: at(ts + 2),
    }
}

pub fn create(method: PaymentMethod) -> CreatePayment {
    CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "1217752501201407033233368018".into(),
        amount: Money::new(100, Currency::CNY),
        method,
        subject: "Image形象店-深圳腾大-QQ公仔".into(),
        description: None,
        return_url: None,
        notify_url: "https://www.weixin.qq.com/wxpay/pay.php".into(),
        expires_at: at(TS + 3600),
        payer: Payer {
            openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
            client_ip: Some("203.0.113.7".into()),
            payment_code: Some("134567890123456789".into()),
        },
    }
}

/// A notification as the sandbox (or WeChat Pay) sends it.
pub fn notification(
    event: &str,
    original: &str,
    plain: &str,
    key: &str,
    serial: &str,
) -> (Vec<(String, String)>, Vec<u8>) {
    let ciphertext =
        aead::encrypt(key.as_bytes(), "fdasflkja484", original, plain.as_bytes()).unwrap();
    let body = serde_json::json!({
        "id": "EV-2018022511223320873", "create_time": "2015-05-20T13:29:35+08:00",
        "resource_type": "encrypt-resource", "event_type": event, "summary": "s",
        "resource": {"original_type": original, "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": ciphertext, "associated_data": original, "nonce": "fdasflkja484"}
    })
    .to_string();
    let resp = signed(200, &body, serial, TS);
    (resp.headers, resp.body)
}

pub fn raw<'a>(headers: &'a [(String, String)], body: &'a [u8]) -> RawNotification<'a> {
    RawNotification {
        headers,
        body,
        received_at: at(TS + 1),
    }
}
