//! The sandboxes' own rule implementations pinned to the public vectors of china-wallets.md
//! section D, the same vectors the adapters' golden tests pin: both sides are held to the
//! providers' published bytes, neither to the other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};

use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_testkit::protocol::alipay::{Signed, sign_string};
use moongate_testkit::protocol::wechatpay::{
    encrypt_resource, request_message, response_message, v2_sign, v2_sign_matches,
};

fn fixture(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

#[test]
fn d2_2_alipay_request_sign_string_and_signature() {
    let biz =
        r#"{"out_trade_no":"20150320010101001","total_amount":"88.88","subject":"Iphone6 16G"}"#;
    let params = [
        ("version", "1.0"),
        ("method", "alipay.trade.precreate"),
        ("app_id", "2021000122671080"),
        ("charset", "utf-8"),
        ("format", "JSON"),
        ("sign_type", "RSA2"),
        ("timestamp", "2024-05-13 17:49:20"),
        ("notify_url", "https://example.com/alipay/notify"),
        ("biz_content", biz),
    ];
    let content = sign_string(params, Signed::Request);
    assert_eq!(
        content,
        "app_id=2021000122671080&biz_content={\"out_trade_no\":\"20150320010101001\",\"total_amount\":\"88.88\",\"subject\":\"Iphone6 16G\"}&charset=utf-8&format=JSON&method=alipay.trade.precreate&notify_url=https://example.com/alipay/notify&sign_type=RSA2&timestamp=2024-05-13 17:49:20&version=1.0"
    );
    let signer = RsaSigner::from_pem(&fixture("keys/nodejs-sdk-app-private-key.pem")).unwrap();
    assert_eq!(
        signer.sign_base64(content.as_bytes()).unwrap(),
        "TxBGfyZbSjm85Ua8pLuWX7YyRafpPAG1gaE70BwdL4UBqrCFCTd1z7SC2ulCroRChQTU45Mc+dJBqnpE4/2pcDNtYN04DRIjnPMRbjCzEF7aiFUTdlF6goRUW2Ecn5QIWCLIC0Nu3x2CVC+h+E1sP9Y6whASbVcUO57kn46/qE1XleqAWMAQ5XsqRmbdYioQIYJFQA022spaDlQC3A8ml6Ehkv3uz1ufNMaHweJUHSsvuIemyyujrf1JDEJnPCm+M9LC9MuQwCyGtRlIgjFTSQl3K3h3tDJFlgaXVWpxMU0zS7gUoX/DiGcsa275toc0cUcv3LiXX4DQM9J8TdLZuA=="
    );
}

#[test]
fn d1_1_alipay_notification_rule_leaves_out_sign_type() {
    let body = fixture("alipay/notify-trade-success.form");
    let fields: HashMap<String, String> = form_urlencoded::parse(body.trim().as_bytes())
        .into_owned()
        .collect();
    let verifier =
        RsaVerifier::from_pem(&fixture("keys/nodejs-sdk-notify-public-key.txt")).unwrap();
    let pairs = || fields.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let notification = sign_string(pairs(), Signed::Notification);
    assert!(notification.starts_with("app_id=2019073166072302&auth_app_id="));
    assert!(verifier.verify_base64(notification.as_bytes(), &fields["sign"]));
    // With sign_type in the string (the request rule), Alipay's own signature fails.
    let request = sign_string(pairs(), Signed::Request);
    assert!(!verifier.verify_base64(request.as_bytes(), &fields["sign"]));
}

#[test]
fn d2_1_wechatpay_request_message_and_signature() {
    let signer =
        RsaSigner::from_pem(&fixture("keys/wechatpay-go-merchant-private-key.pem")).unwrap();
    let get = request_message(
        "GET",
        "/v3/certificates",
        "1624523846",
        "A1B2C3D4E5F6G7",
        b"",
    );
    assert_eq!(
        get,
        b"GET\n/v3/certificates\n1624523846\nA1B2C3D4E5F6G7\n\n"
    );
    assert_eq!(
        signer.sign_base64(&get).unwrap(),
        "mG2drrUCDR7EVrJmQVI6eW5VlDB0zzpcYLC83UiNxe1aNAomazwWci4q/HPA7MmlbGAswwSE7iPiLy3vflXohf42WXNA031htDbpBCVt1ti2teKFPh531KK07unc+CrCiepz6veTgsylXYO4iBI+DYQ4UDj+r8A/lhqj7yHmtLjvcJ45Og6Wdecd/T7jGgMwcEe1mR7HLzC7R6snnLOaRwnPCe6WyiWGDHHuQzvNFeaztpM3noedCPEwGculoy2MPVvNER6TpM8CUijpKChWM7Q5vIwg8QYv9bH7IuZitLMAgx0+cgaNzFbzZuXxwGB6wIAmv70dWcQx8F2erR/Nzw=="
    );
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"}}"#;
    let post = request_message(
        "POST",
        "/v3/pay/transactions/native",
        "1624523846",
        "A1B2C3D4E5F6G7",
        body.as_bytes(),
    );
    assert_eq!(
        signer.sign_base64(&post).unwrap(),
        "yydH5XPBobXDNZjFuTMwKJyEdcBPkXEFG4KqtnDq/RFg+alqTKpLF8kGjsPLe4ZTs8XAT4BETuOvKGRp9suZH55fREX4oy+P78uyIo68vJmnYZMle6+jOre625hGu7dBR4zLu+YIzX+sixs4+fKF/xsAQi0obHpBn0dV+qmXELFAldtloL52Dj0+ZA0x3KAcMehv9Bc6DqEQOzGNqzWWa5XDwLnlDHSFfx7i+UxJRQ2lo1ZdD6/jwjLfQsbnvd5G7fOC4EvGg26QDF6sqw+Nk0Fey7v6XmBh20HnNExXb3lGtKcw3JA8YhV+ohU5yDOOFk3+6tQOHeg0kJDL9S/riQ=="
    );
    assert_eq!(
        response_message("1624523846", "EcZ9", b"{}"),
        b"1624523846\nEcZ9\n{}\n"
    );
}

#[test]
fn d2_4_wechatpay_resource_encryption() {
    let plain = r#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"1217752501201407033233368018","transaction_id":"4200000000000000000000000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"OTHERS","attach":"","success_time":"2024-05-13T17:49:20+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":100,"payer_total":100,"currency":"CNY","payer_currency":"CNY"}}"#;
    assert_eq!(
        encrypt_resource(
            b"0123456789abcdef0123456789abcdef",
            "fdasflkja484",
            "transaction",
            plain.as_bytes()
        )
        .unwrap(),
        "DUcegK33A8MEOgdJt8PWwAdrzVDy3c3BTENCdjZ/7K2gbkFM2sU/cZ/UPNrLir4DXaSrqBdzgGy/sMCWIPKVQdMoXpY4xG4iYhF7TH0MBs4T7FaM9hoFjn/sa9TCWtjLTRzZiknVkW9IXW37a35VmVaeZyQYgusGnnisNS4C5dQEMLenoEF4L3PO4m3uteG+aMmWJMtSbZltG3H2Cu2Vpv+cqnyyGHLFevoxkLhsHY8XPi0+gkQtq7BpfOJiSEHy+Tzi+aGqosa8KxEMMuGWEW91xP679gDrMCnQbv7+qi5TWa6XKIPVFYDP19uWymICIT4D3HJk530j6t/m20u9MxziVUgov6XnO6mUQwF3pBlwTgexb3JVSI2KQmrqh9RYqB7/ZQZzJOYBcg4HyHxnT0U5jDEnaexLsuz2pBMA7TpMmnDm9odMhSmUoPf4jNhnjIgKZ1BX8qVC5shILgKPTuxL4jB1ROLpEQKOxynN5pUI3jzN3f8iZmrAcgAGcf5/Vwl9jqw6gwwtdHXBbF09SgGwHfw2awQO8lGe2cr9GTBcMpxOxcv4YoBLv2UowQgmPPm/K9N4Ati810QcjcRcTA=="
    );
    // A 16-byte key is not an APIv3 key.
    assert!(encrypt_resource(b"0123456789abcdef", "fdasflkja484", "transaction", b"x").is_none());
}

#[test]
fn d1_8_wechatpay_v2_hmac_sha256() {
    let key = "192006250b4c09247ec02edce69f6a2d";
    let mut fields: BTreeMap<String, String> = [
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
    let sign = v2_sign(&fields, key);
    assert_eq!(
        sign,
        "6A9AE1657590FD6257D693A078E1C3E4BB6BA4DC30B23E0EE2496E54170DACD6"
    );
    fields.insert("sign".into(), sign);
    assert!(v2_sign_matches(&fields, key));
    fields.insert("body".into(), "tesT".into());
    assert!(!v2_sign_matches(&fields, key));
}
