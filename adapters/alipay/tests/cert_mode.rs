#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Certificate mode end to end in the adapter: what requests carry, which certificate verifies
//! an answer, what a rotation of Alipay's certificate looks like, and the configuration
//! mistakes refused at load. The certificates are `fixtures/alipay/certs/sandbox/` (issued by
//! openssl over the test keys); their SNs come from `sns.txt`, which Python computed, not
//! this crate.

use std::collections::HashMap;

use moongate_adapter_alipay::cert::CertificateError;
use moongate_adapter_alipay::sign::{SignRule, sign_content};
use moongate_adapter_alipay::{AccountError, AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{
    AdapterError, CallContext, CreatePayment, Currency, HttpResponse, Money, NotificationError,
    PaymentAdapter, PaymentMethod, PaymentRef, PaymentStatus, Prepared, RawNotification,
};
use time::macros::datetime;

fn fixture(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

const APP_CERT: &str = "alipay/certs/sandbox/app_cert_public_key.crt";
const ALIPAY_CERT: &str = "alipay/certs/sandbox/alipay_cert_public_key_rsa2.crt";
const ALIPAY_NEXT_CERT: &str = "alipay/certs/sandbox/alipay_cert_public_key_rsa2_next.crt";
const ROOT: &str = "alipay/certs/sandbox/alipay_root_cert.crt";
const ALIPAY_KEY: &str = "keys/sandbox-alipay-private-key.pem";
const ALIPAY_NEXT_KEY: &str = "keys/sandbox-alipay-next-private-key.pem";
const APP_ID: &str = "2021000122671081";

/// An SN of `sns.txt`.
fn sn(which: &str) -> String {
    fixture("alipay/certs/sandbox/sns.txt")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{which}\t")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {which} in sns.txt"))
}

fn load(app_cert: &str, alipay_certs: &[&str]) -> Result<AlipayAdapter, AccountError> {
    let texts: Vec<String> = alipay_certs.iter().map(|f| fixture(f)).collect();
    AlipayAdapter::new(&AccountKeys {
        app_id: APP_ID,
        gateway_url: "https://openapi.alipay.com/gateway.do",
        consent_url: None,
        seller_id: None,
        app_private_key: &fixture("keys/nodejs-sdk-app-private-key.pem"),
        alipay: AlipayKeys::Certificates {
            app_cert: &fixture(app_cert),
            alipay_certs: texts.iter().map(String::as_str).collect(),
            alipay_root_cert: &fixture(ROOT),
        },
    })
}

fn cx() -> CallContext {
    CallContext {
        now: datetime!(2026-12-01 09:49:20 UTC),
        nonce: "n".repeat(32),
    }
}

fn form(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

/// A query answer signed with `key`, naming the certificate `cert_sn` when given.
fn answer(key: &str, cert_sn: Option<&str>) -> HttpResponse {
    let node = r#"{"code":"10000","msg":"Success","trade_no":"T1","out_trade_no":"MG_1","trade_status":"TRADE_SUCCESS","total_amount":"1.00"}"#;
    let sign = RsaSigner::from_pem(&fixture(key))
        .unwrap()
        .sign_base64(node.as_bytes())
        .unwrap();
    let sn = cert_sn
        .map(|sn| format!(r#","alipay_cert_sn":"{sn}""#))
        .unwrap_or_default();
    HttpResponse {
        status: 200,
        headers: vec![],
        body: format!(r#"{{"alipay_trade_query_response":{node}{sn},"sign":"{sign}"}}"#)
            .into_bytes(),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn order() -> PaymentRef {
    PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "MG_1".into(),
        amount: Money::new(100, Currency::CNY),
    }
}

#[test]
fn every_request_carries_both_sns_and_signs_them() {
    let adapter = load(APP_CERT, &[ALIPAY_CERT]).unwrap();
    let req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "MG_1".into(),
        amount: Money::new(1, Currency::CNY),
        method: PaymentMethod::AlipayQr,
        subject: "订单 1".into(),
        description: None,
        return_url: None,
        notify_url: "https://gw.example/notify".into(),
        expires_at: datetime!(2026-12-01 10:49:20 UTC),
        payer: Default::default(),
    };
    let Prepared::Send(http) = adapter.prepare_create(&cx(), &req).unwrap() else {
        panic!("a QR order is a server call")
    };
    let query = form(http.url.split_once('?').unwrap().1);
    assert_eq!(query["app_cert_sn"], sn("app"));
    assert_eq!(query["alipay_root_cert_sn"], sn("root"));
    let mut all = query.clone();
    all.extend(form(std::str::from_utf8(&http.body).unwrap()));
    let content = sign_content(
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::Request,
    );
    assert!(content.contains(&format!("&app_cert_sn={}&", sn("app"))));
    assert!(content.starts_with(&format!("alipay_root_cert_sn={}&", sn("root"))));
    let app_public = RsaVerifier::from_pem(&fixture("keys/nodejs-sdk-app-public-key.pem")).unwrap();
    assert!(app_public.verify_base64(content.as_bytes(), &all["sign"]));
}

#[test]
fn an_answer_is_verified_with_the_certificate_it_names() {
    let current_only = load(APP_CERT, &[ALIPAY_CERT]).unwrap();
    let paid =
        |r: Result<PaymentStatus, AdapterError>| matches!(r, Ok(PaymentStatus::Succeeded { .. }));
    assert!(paid(current_only.parse_query(
        &order(),
        &answer(ALIPAY_KEY, Some(&sn("alipay")))
    )));
    // Naming no certificate, it may be signed by any configured one.
    assert!(paid(
        current_only.parse_query(&order(), &answer(ALIPAY_KEY, None))
    ));
    // Signed by another key than the certificate it names.
    assert!(matches!(
        current_only.parse_query(&order(), &answer(ALIPAY_NEXT_KEY, Some(&sn("alipay")))),
        Err(AdapterError::Protocol(m)) if m.contains("does not verify")
    ));
    assert!(matches!(
        current_only.parse_query(&order(), &answer(ALIPAY_NEXT_KEY, None)),
        Err(AdapterError::Protocol(m)) if m.contains("does not verify")
    ));
}

#[test]
fn a_rotation_is_refused_by_name_until_the_next_certificate_is_configured() {
    let next = sn("alipay-next");
    let current_only = load(APP_CERT, &[ALIPAY_CERT]).unwrap();
    let refused = current_only.parse_query(&order(), &answer(ALIPAY_NEXT_KEY, Some(&next)));
    let Err(AdapterError::Protocol(message)) = refused else {
        panic!("an answer signed with an unconfigured certificate must be refused: {refused:?}")
    };
    assert!(
        message.contains(&next) && message.contains("alipay_certs"),
        "{message}"
    );
    let both = load(APP_CERT, &[ALIPAY_CERT, ALIPAY_NEXT_CERT]).unwrap();
    for (key, cert_sn) in [(ALIPAY_NEXT_KEY, next.clone()), (ALIPAY_KEY, sn("alipay"))] {
        assert!(matches!(
            both.parse_query(&order(), &answer(key, Some(&cert_sn))),
            Ok(PaymentStatus::Succeeded { .. })
        ));
    }
}

fn notification(key: &str, cert_sn: Option<&str>, sn_signed: bool) -> Vec<u8> {
    let mut fields = form(&fixture("alipay/notify-trade-success.form"));
    fields.remove("sign");
    fields.insert("app_id".into(), APP_ID.into());
    if sn_signed && let Some(sn) = cert_sn {
        fields.insert("alipay_cert_sn".into(), sn.into());
    }
    let content = sign_content(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::NotificationV1,
    );
    let sign = RsaSigner::from_pem(&fixture(key))
        .unwrap()
        .sign_base64(content.as_bytes())
        .unwrap();
    fields.insert("sign".into(), sign);
    if !sn_signed && let Some(sn) = cert_sn {
        fields.insert("alipay_cert_sn".into(), sn.into());
    }
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish()
        .into_bytes()
}

#[test]
fn notifications_verify_with_the_named_or_any_configured_certificate() {
    let adapter = load(APP_CERT, &[ALIPAY_CERT, ALIPAY_NEXT_CERT]).unwrap();
    let parse = |body: &[u8]| {
        adapter.parse_notification(&RawNotification {
            headers: &[],
            body,
            received_at: datetime!(2019-08-15 07:56:26 UTC),
        })
    };
    let next = sn("alipay-next");
    assert!(parse(&notification(ALIPAY_NEXT_KEY, Some(&next), true)).is_ok());
    assert!(parse(&notification(ALIPAY_NEXT_KEY, Some(&next), false)).is_ok());
    assert!(parse(&notification(ALIPAY_NEXT_KEY, None, false)).is_ok());
    assert!(parse(&notification(ALIPAY_KEY, None, false)).is_ok());
    // The named certificate did not sign it; one we do not hold is never guessed.
    assert_eq!(
        parse(&notification(ALIPAY_KEY, Some(&next), true)).err(),
        Some(NotificationError::BadSignature)
    );
    assert_eq!(
        parse(&notification(
            ALIPAY_KEY,
            Some("0123456789abcdef0123456789abcdef"),
            true
        ))
        .err(),
        Some(NotificationError::BadSignature)
    );
    // A key that is no Alipay certificate's.
    assert_eq!(
        parse(&notification(
            "keys/nodejs-sdk-app-private-key.pem",
            None,
            false
        ))
        .err(),
        Some(NotificationError::BadSignature)
    );
}

#[test]
fn mistakes_in_the_certificates_are_refused_at_load() {
    // Alipay's certificate in place of the app's: it certifies another key than ours.
    let wrong = load(ALIPAY_CERT, &[ALIPAY_CERT]).unwrap_err();
    assert!(matches!(
        wrong,
        AccountError::Certificates(CertificateError::AppCertKeyMismatch(_))
    ));
    assert_eq!(wrong.setting().0, ".app_cert");
    let twice = load(APP_CERT, &[ALIPAY_CERT, ALIPAY_CERT]).unwrap_err();
    assert_eq!(twice.setting().0, ".alipay_certs[1]");
    let junk = load(
        APP_CERT,
        &[ALIPAY_CERT, "keys/sandbox-alipay-public-key.pem"],
    )
    .unwrap_err();
    assert_eq!(junk.setting().0, ".alipay_certs[1]");
    assert!(load(APP_CERT, &[ALIPAY_CERT, ALIPAY_NEXT_CERT]).is_ok());
}

/// ISV mode (more-wallets.md §7): the ISV app's keys, the merchant's token on every call.
fn isv() -> AlipayAdapter {
    AlipayAdapter::new(&AccountKeys {
        app_id: "2021000122671080",
        gateway_url: "https://openapi.alipay.com/gateway.do",
        consent_url: None,
        seller_id: None,
        app_private_key: &fixture("keys/nodejs-sdk-app-private-key.pem"),
        alipay: AlipayKeys::PublicKey(&fixture("keys/sandbox-alipay-public-key.pem")),
    })
    .unwrap()
    .for_authorisation(
        &moongate_adapter_alipay::Authorisation {
            auth_app_id: "2021000122679999",
            app_auth_token: moongate_contract::TokenSlot::new(Some(
                moongate_contract::Secret::new("202612BBtoken".to_string()),
            )),
        },
        None,
    )
}

#[test]
fn an_isv_call_carries_the_merchants_token_in_its_signed_body() {
    let adapter = isv();
    let Prepared::Send(http) = adapter
        .prepare_query(
            &cx(),
            &PaymentRef {
                created_at: time::OffsetDateTime::UNIX_EPOCH,
                provider_order_id: "MG_1".into(),
                amount: Money::new(1, Currency::CNY),
            },
        )
        .unwrap()
    else {
        panic!("a query is a server call")
    };
    assert!(!http.url.contains("app_auth_token"), "{}", http.url);
    let query = form(http.url.split_once('?').unwrap().1);
    let body = form(std::str::from_utf8(&http.body).unwrap());
    assert_eq!(body["app_auth_token"], "202612BBtoken");
    assert_eq!(query["app_id"], "2021000122671080");
    let mut all = query.clone();
    all.extend(body);
    let content = sign_content(
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::Request,
    );
    assert!(
        content.starts_with("app_auth_token=202612BBtoken&"),
        "{content}"
    );
    let app_public = RsaVerifier::from_pem(&fixture("keys/nodejs-sdk-app-public-key.pem")).unwrap();
    assert!(app_public.verify_base64(content.as_bytes(), &all["sign"]));
    // The token is a secret: never in the adapter's debug output.
    assert!(!format!("{adapter:?}").contains("202612BBtoken"));
}

#[test]
fn an_isv_notification_is_the_merchants_only_when_it_names_its_app() {
    let adapter = isv();
    let body = |auth_app_id: &str| {
        let mut fields = form(&fixture("alipay/notify-trade-success.form"));
        fields.remove("sign");
        fields.insert("app_id".into(), "2021000122671080".into());
        fields.insert("auth_app_id".into(), auth_app_id.into());
        let content = sign_content(
            fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignRule::NotificationV1,
        );
        let sign = RsaSigner::from_pem(&fixture(ALIPAY_KEY))
            .unwrap()
            .sign_base64(content.as_bytes())
            .unwrap();
        fields.insert("sign".into(), sign);
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields.iter())
            .finish()
    };
    let parse = |text: String| {
        adapter.parse_notification(&RawNotification {
            headers: &[],
            body: text.as_bytes(),
            received_at: datetime!(2019-08-15 07:56:26 UTC),
        })
    };
    assert!(parse(body("2021000122679999")).is_ok());
    // Another merchant of the same ISV.
    assert_eq!(
        parse(body("2021000122678888")).err(),
        Some(NotificationError::WrongAccount)
    );
}
