//! The `PaymentAdapter`: what it sends for a create and a query, and that both name the order
//! by the same `orderId` and `txnTime` (the payment's creation time), whenever they are sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use moongate_adapter_unionpay::{AccountKeys, SigningKey, UnionPayAdapter};
use moongate_contract::{
    CallContext, CreatePayment, Currency, HttpResponse, Money, Payer, PaymentAdapter,
    PaymentMethod, PaymentRef, Prepared,
};
use time::macros::datetime;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../fixtures/unionpay/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn adapter() -> UnionPayAdapter {
    UnionPayAdapter::new(&AccountKeys {
        mer_id: "777290058167151",
        signing: SigningKey::Pem {
            key: &fixture("test-merchant-private-key.pem"),
            certificate: &fixture("test-merchant-cert.pem"),
        },
        middle_certificate: &fixture("sandbox-middle.pem"),
        root_certificate: &fixture("sandbox-root.pem"),
        gateway_url: "https://gateway.test.95516.com/gateway/api/",
        file_url: "https://filedownload.test.95516.com/",
    })
    .unwrap()
}

fn fields(prepared: Prepared<moongate_contract::PaymentStatus>) -> (String, Vec<(String, String)>) {
    let Prepared::Send(request) = prepared else {
        panic!("UnionPay calls are sent");
    };
    let form = form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (request.url, form)
}

fn get<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn a_create_and_its_queries_name_the_order_by_its_creation_time() {
    let created = datetime!(2026-12-01 02:03:04 UTC);
    let request = CreatePayment {
        provider_order_id: "pay_01M8SKCKA4JCP117E90K2R4M".into(),
        amount: Money::new(1200, Currency::CNY),
        method: PaymentMethod::UnionpayQr,
        subject: "Tea".into(),
        description: None,
        return_url: None,
        notify_url: "https://pay.example/notify/unionpay/shop/up".into(),
        expires_at: created + time::Duration::minutes(15),
        payer: Payer::default(),
        created_at: created,
    };
    // Sent an hour later (a re-send), the create still carries the creation time.
    let cx = CallContext {
        now: created + time::Duration::hours(1),
        nonce: "n".repeat(32),
    };
    let adapter = adapter();
    let (url, create) = fields(adapter.prepare_create(&cx, &request).unwrap());
    assert_eq!(
        url,
        "https://gateway.test.95516.com/gateway/api/backTransReq.do"
    );
    assert_eq!(get(&create, "orderId"), Some("pay01M8SKCKA4JCP117E90K2R4M"));
    assert_eq!(get(&create, "txnTime"), Some("20261201100304"));
    assert_eq!(get(&create, "payTimeout"), Some("20261201101804"));
    assert_eq!(get(&create, "txnAmt"), Some("1200"));
    assert_eq!(get(&create, "certId"), Some("69903319369"));
    assert_eq!(
        get(&create, "backUrl"),
        Some("https://pay.example/notify/unionpay/shop/up")
    );
    assert_eq!(
        (get(&create, "txnType"), get(&create, "txnSubType")),
        (Some("01"), Some("07"))
    );
    assert!(get(&create, "signature").is_some());

    let reference = PaymentRef {
        provider_order_id: request.provider_order_id.clone(),
        amount: request.amount,
        created_at: created,
    };
    let (url, query) = fields(adapter.prepare_query(&cx, &reference).unwrap());
    assert!(url.ends_with("/gateway/api/queryTrans.do"), "{url}");
    assert_eq!(get(&query, "orderId"), get(&create, "orderId"));
    assert_eq!(get(&query, "txnTime"), get(&create, "txnTime"));
}

#[test]
fn a_payment_code_is_sent_as_qr_no() {
    let created = datetime!(2026-12-01 02:03:04 UTC);
    let payer = Payer {
        payment_code: Some("6212345678901234567".into()),
        ..Payer::default()
    };
    let request = CreatePayment {
        provider_order_id: "pay_01M8SKCKA4JCP117E90K2R4M".into(),
        amount: Money::new(1, Currency::CNY),
        method: PaymentMethod::UnionpayPaymentCode,
        subject: "Tea".into(),
        description: None,
        return_url: None,
        notify_url: "https://pay.example/n".into(),
        expires_at: created + time::Duration::minutes(15),
        payer,
        created_at: created,
    };
    let cx = CallContext {
        now: created,
        nonce: "n".repeat(32),
    };
    let (_, create) = fields(adapter().prepare_create(&cx, &request).unwrap());
    assert_eq!(get(&create, "qrNo"), Some("6212345678901234567"));
    assert_eq!(
        (get(&create, "txnType"), get(&create, "txnSubType")),
        (Some("01"), Some("06"))
    );
    // Other currencies are refused before anything is sent.
    let usd = CreatePayment {
        amount: Money::new(1, Currency::parse("USD").unwrap()),
        ..request
    };
    assert!(adapter().prepare_create(&cx, &usd).is_err());
}

#[test]
fn an_answer_that_is_not_http_200_is_not_believed() {
    let created = datetime!(2026-12-01 02:03:04 UTC);
    let reference = PaymentRef {
        provider_order_id: "pay_01M8SKCKA4JCP117E90K2R4M".into(),
        amount: Money::new(1, Currency::CNY),
        created_at: created,
    };
    let answer = HttpResponse {
        status: 502,
        headers: vec![],
        body: b"respCode=00".to_vec(),
        received_at: created,
    };
    assert!(adapter().parse_query(&reference, &answer).is_err());
}

#[test]
fn the_bill_is_asked_for_by_file_transfer_with_the_clearing_day() {
    let cx = CallContext {
        now: datetime!(2026-12-02 02:30:00 UTC),
        nonce: "n".repeat(32),
    };
    let request = adapter()
        .prepare_statement(&cx, time::macros::date!(2026 - 12 - 01))
        .unwrap();
    assert_eq!(request.url, "https://filedownload.test.95516.com/");
    let form: Vec<(String, String)> = form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (key, value) in [
        ("txnType", "76"),
        ("txnSubType", "01"),
        ("bizType", "000000"),
        ("fileType", "00"),
        ("settleDate", "1201"),
        ("txnTime", "20261202103000"),
        ("merId", "777290058167151"),
        ("accessType", "0"),
        ("signMethod", "01"),
    ] {
        assert_eq!(get(&form, key), Some(value), "{key}");
    }
    // A file transfer has no notification URL, currency or order.
    for key in ["backUrl", "currencyCode", "orderId", "txnAmt"] {
        assert_eq!(get(&form, key), None, "{key}");
    }
    assert!(get(&form, "signature").is_some_and(|s| !s.is_empty()));
}

#[test]
fn the_signing_key_may_be_the_pfx_unionpay_issues() {
    let path = format!(
        "{}/../../fixtures/unionpay/test-merchant.pfx",
        env!("CARGO_MANIFEST_DIR")
    );
    let der = std::fs::read(&path).unwrap();
    let (middle, root) = (fixture("sandbox-middle.pem"), fixture("sandbox-root.pem"));
    let open = |password: &str| {
        UnionPayAdapter::new(&AccountKeys {
            signing: SigningKey::Pfx {
                der: &der,
                password,
            },
            middle_certificate: &middle,
            root_certificate: &root,
            ..base_keys()
        })
    };
    // Its certId is the merchant certificate's serial, not one of the CA certificates'.
    let adapter = open("000000").unwrap();
    assert_eq!(adapter.cert_id(), "69903319369");
    let refused = open("123456").map(|_| ());
    assert!(
        matches!(
            refused,
            Err(moongate_adapter_unionpay::AccountError::SigningStore(_))
        ),
        "{refused:?}"
    );
}

fn base_keys() -> AccountKeys<'static> {
    AccountKeys {
        mer_id: "777290058167151",
        signing: SigningKey::Pem {
            key: "",
            certificate: "",
        },
        middle_certificate: "",
        root_certificate: "",
        gateway_url: "https://gateway.test.95516.com/gateway/api/",
        file_url: "https://filedownload.test.95516.com/",
    }
}
