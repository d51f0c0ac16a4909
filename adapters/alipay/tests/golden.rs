//! Golden tests: the verified vectors of china-wallets.md section D and the exact request layout.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;

use moongate_adapter_alipay::sign::{SignRule, sign_content};
use moongate_adapter_alipay::wire::split_signed_response;
use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{
    AdapterError, CallContext, CloseStatus, CreatePayment, Currency, HttpMethod, HttpResponse,
    Money, NextAction, NotificationError, NotificationEvent, PaymentAdapter, PaymentMethod,
    PaymentRef, PaymentStatus, Prepared, RawNotification, RefundRequest, RefundStatus,
};
use time::macros::datetime;

fn fixture(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/");
    std::fs::read_to_string(format!("{root}{path}")).unwrap()
}

const APP_PRIVATE: &str = "keys/nodejs-sdk-app-private-key.pem";
const APP_PUBLIC: &str = "keys/nodejs-sdk-app-public-key.pem";
const SANDBOX_PRIVATE: &str = "keys/sandbox-alipay-private-key.pem";
const SANDBOX_PUBLIC: &str = "keys/sandbox-alipay-public-key.pem";

fn adapter(app_id: &str, alipay_public: &str) -> AlipayAdapter {
    AlipayAdapter::new(&AccountKeys {
        app_id,
        gateway_url: "https://openapi.alipay.com/gateway.do",
        consent_url: None,
        seller_id: None,
        app_private_key: &fixture(APP_PRIVATE),
        alipay: AlipayKeys::PublicKey(alipay_public),
    })
    .unwrap()
}

fn cx() -> CallContext {
    // 2024-05-13 17:49:20 in Beijing.
    CallContext {
        now: datetime!(2024-05-13 09:49:20 UTC),
        nonce: "n".repeat(32),
    }
}

fn form(text: &str) -> HashMap<String, String> {
    form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .collect()
}

#[test]
fn d2_2_request_signature_is_byte_exact() {
    let content = "app_id=2021000122671080&biz_content={\"out_trade_no\":\"20150320010101001\",\"total_amount\":\"88.88\",\"subject\":\"Iphone6 16G\"}&charset=utf-8&format=JSON&method=alipay.trade.precreate&notify_url=https://example.com/alipay/notify&sign_type=RSA2&timestamp=2024-05-13 17:49:20&version=1.0";
    let signer = RsaSigner::from_pem(&fixture(APP_PRIVATE)).unwrap();
    assert_eq!(
        signer.sign_base64(content.as_bytes()).unwrap(),
        "TxBGfyZbSjm85Ua8pLuWX7YyRafpPAG1gaE70BwdL4UBqrCFCTd1z7SC2ulCroRChQTU45Mc+dJBqnpE4/2pcDNtYN04DRIjnPMRbjCzEF7aiFUTdlF6goRUW2Ecn5QIWCLIC0Nu3x2CVC+h+E1sP9Y6whASbVcUO57kn46/qE1XleqAWMAQ5XsqRmbdYioQIYJFQA022spaDlQC3A8ml6Ehkv3uz1ufNMaHweJUHSsvuIemyyujrf1JDEJnPCm+M9LC9MuQwCyGtRlIgjFTSQl3K3h3tDJFlgaXVWpxMU0zS7gUoX/DiGcsa275toc0cUcv3LiXX4DQM9J8TdLZuA=="
    );
}

#[test]
fn precreate_request_layout_and_sign_string() {
    let adapter = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "20150320010101001".into(),
        amount: Money::new(8888, Currency::CNY),
        method: PaymentMethod::AlipayQr,
        subject: "Iphone6 16G".into(),
        description: None,
        return_url: None,
        notify_url: "https://example.com/alipay/notify".into(),
        expires_at: datetime!(2024-05-13 11:19:20 UTC),
        payer: Default::default(),
    };
    let Prepared::Send(http) = adapter.prepare_create(&cx(), &req).unwrap() else {
        panic!("precreate must be sent")
    };
    assert_eq!(http.method, HttpMethod::Post);
    let (base, query) = http.url.split_once('?').unwrap();
    assert_eq!(base, "https://openapi.alipay.com/gateway.do");
    let query = form(query);
    let body = form(std::str::from_utf8(&http.body).unwrap());
    assert_eq!(body.keys().collect::<Vec<_>>(), vec!["biz_content"]);
    assert!(!query.contains_key("biz_content"));
    assert_eq!(
        body["biz_content"],
        r#"{"out_trade_no":"20150320010101001","total_amount":"88.88","subject":"Iphone6 16G","timeout_express":"90m"}"#
    );
    assert_eq!(query["timestamp"], "2024-05-13 17:49:20");
    assert_eq!(query["sign_type"], "RSA2");
    assert_eq!(query["charset"], "utf-8");
    let all: Vec<(&str, &str)> = query
        .iter()
        .chain(body.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let content = sign_content(all, SignRule::Request);
    assert_eq!(
        content,
        format!(
            "app_id=2021000122671080&biz_content={}&charset=utf-8&format=JSON&method=alipay.trade.precreate&notify_url=https://example.com/alipay/notify&sign_type=RSA2&timestamp=2024-05-13 17:49:20&version=1.0",
            body["biz_content"]
        )
    );
    let verifier = RsaVerifier::from_pem(&fixture(APP_PUBLIC)).unwrap();
    assert!(verifier.verify_base64(content.as_bytes(), &query["sign"]));
}

#[test]
fn wap_pay_is_a_signed_redirect_with_quit_url() {
    let adapter = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "MG_1".into(),
        amount: Money::new(1, Currency::CNY),
        method: PaymentMethod::AlipayWap,
        subject: "订单 1".into(),
        description: Some("x".into()),
        return_url: Some("https://shop.example/back?o=1".into()),
        notify_url: "https://gw.example/notify".into(),
        expires_at: datetime!(2024-05-13 09:59:20 UTC),
        payer: Default::default(),
    };
    let Prepared::Ready(PaymentStatus::AwaitingPayment {
        next_action: Some(NextAction::Redirect { url }),
    }) = adapter.prepare_create(&cx(), &req).unwrap()
    else {
        panic!("wap pay is a redirect")
    };
    let query = form(url.split_once('?').unwrap().1);
    assert_eq!(query["method"], "alipay.trade.wap.pay");
    assert_eq!(query["return_url"], "https://shop.example/back?o=1");
    assert!(query["biz_content"].contains(r#""product_code":"QUICK_WAP_WAY""#));
    assert!(query["biz_content"].contains(r#""quit_url":"https://shop.example/back?o=1""#));
    let content = sign_content(
        query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::Request,
    );
    let verifier = RsaVerifier::from_pem(&fixture(APP_PUBLIC)).unwrap();
    assert!(verifier.verify_base64(content.as_bytes(), &query["sign"]));
}

#[test]
fn d1_3_response_signature_over_raw_node_bytes() {
    let body = fixture("alipay/response-open-file-upload.json");
    let response =
        split_signed_response(body.as_bytes(), "alipay_open_file_upload_response").unwrap();
    let (node, sign) = (response.node, response.sign);
    assert_eq!(
        node,
        br#"{"code":"10000","msg":"Success","file_id":"CAxAToWB1JsAAAAAAAAAAAAADgSLAQBr"}"#
    );
    let verifier =
        RsaVerifier::from_pem(&fixture("keys/nodejs-sdk-alipay-public-key.pem")).unwrap();
    assert!(verifier.verify_base64(node, sign.as_deref().unwrap()));
    let mut tampered = node.to_vec();
    tampered[10] = b'2';
    assert!(!verifier.verify_base64(&tampered, sign.as_deref().unwrap()));
}

#[test]
fn d1_1_real_notification_verifies_without_sign_type() {
    let adapter = adapter(
        "2019073166072302",
        &fixture("keys/nodejs-sdk-notify-public-key.txt"),
    );
    let body = fixture("alipay/notify-trade-success.form");
    let raw = RawNotification {
        headers: &[],
        body: body.as_bytes(),
        received_at: datetime!(2019-08-15 07:56:26 UTC),
    };
    let note = adapter.parse_notification(&raw).unwrap();
    assert_eq!(note.dedupe_id, "2019081500222155624068450559358070");
    assert_eq!(note.provider_order_id, "20190815155618536-564-57");
    assert_eq!(note.total, Some(Money::new(10, Currency::CNY)));
    assert_eq!(
        note.event,
        NotificationEvent::Payment {
            status: PaymentStatus::Succeeded {
                provider_ref: "2019081522001468450512505578".into(),
                amount: Money::new(10, Currency::CNY),
                paid_at: Some(datetime!(2019-08-15 07:56:24 UTC)),
            },
            refunded_total: None,
        }
    );
    // The same vector with sign_type inside the signed string must NOT verify (rule V1).
    let fields = form(&body);
    let with_type = sign_content(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::Request,
    );
    let verifier =
        RsaVerifier::from_pem(&fixture("keys/nodejs-sdk-notify-public-key.txt")).unwrap();
    assert!(!verifier.verify_base64(with_type.as_bytes(), &fields["sign"]));

    // Wrong app id: verified but for another account.
    let other = adapter_with_notify_key("2019073166072303");
    assert_eq!(
        other.parse_notification(&raw),
        Err(NotificationError::WrongAccount)
    );
    // Tampered amount.
    let tampered = body.replace("total_amount=0.10", "total_amount=1.00");
    let raw = RawNotification {
        body: tampered.as_bytes(),
        ..raw
    };
    assert_eq!(
        adapter.parse_notification(&raw),
        Err(NotificationError::BadSignature)
    );
    // Duplicated key.
    let doubled = format!("{body}&total_amount=0.10");
    let raw = RawNotification {
        body: doubled.as_bytes(),
        ..raw
    };
    assert!(matches!(
        adapter.parse_notification(&raw),
        Err(NotificationError::Malformed(_))
    ));
}

/// Apps created since Alipay's OpenID change are told the buyer as `buyer_open_id` and no
/// longer get `buyer_id`: such a notification is as good as the other (the adapter needs
/// neither). The D.1 #1 notification with its `buyer_id` replaced, signed again by the
/// sandbox's key under the notification rule.
#[test]
fn a_notification_naming_the_buyer_by_open_id_only_is_accepted() {
    let mut fields = form(&fixture("alipay/notify-trade-success.form"));
    assert!(fields.remove("buyer_id").is_some());
    fields.insert(
        "buyer_open_id".into(),
        "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5".into(),
    );
    fields.remove("sign");
    let content = sign_content(
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignRule::NotificationV1,
    );
    let sign = RsaSigner::from_pem(&fixture(SANDBOX_PRIVATE))
        .unwrap()
        .sign_base64(content.as_bytes())
        .unwrap();
    fields.insert("sign".into(), sign);
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields.iter())
        .finish();
    let adapter = adapter("2019073166072302", &fixture(SANDBOX_PUBLIC));
    let note = adapter
        .parse_notification(&RawNotification {
            headers: &[],
            body: body.as_bytes(),
            received_at: datetime!(2019-08-15 07:56:26 UTC),
        })
        .unwrap();
    assert!(matches!(
        note.event,
        NotificationEvent::Payment {
            status: PaymentStatus::Succeeded { .. },
            ..
        }
    ));
}

fn adapter_with_notify_key(app_id: &str) -> AlipayAdapter {
    adapter(app_id, &fixture("keys/nodejs-sdk-notify-public-key.txt"))
}

/// Signs a response node with the sandbox key, as our sandbox (and Alipay) does.
fn signed_response(method: &str, node: &str) -> HttpResponse {
    let signer = RsaSigner::from_pem(&fixture(SANDBOX_PRIVATE)).unwrap();
    let sign = signer.sign_base64(node.as_bytes()).unwrap();
    let name = format!("{}_response", method.replace('.', "_"));
    HttpResponse {
        status: 200,
        headers: vec![],
        body: format!(r#"{{"{name}":{node},"sign":"{sign}"}}"#).into_bytes(),
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
fn query_outcomes_map_without_guessing() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let q = |node: &str| a.parse_query(&order(), &signed_response("alipay.trade.query", node));
    assert_eq!(
        q(
            r#"{"code":"10000","msg":"Success","trade_no":"T1","out_trade_no":"MG_1","trade_status":"TRADE_SUCCESS","total_amount":"1.00","send_pay_date":"2024-05-13 17:49:20"}"#
        ),
        Ok(PaymentStatus::Succeeded {
            provider_ref: "T1".into(),
            amount: Money::new(100, Currency::CNY),
            paid_at: Some(datetime!(2024-05-13 09:49:20 UTC)),
        })
    );
    assert_eq!(
        q(
            r#"{"code":"10000","msg":"Success","out_trade_no":"MG_1","trade_status":"WAIT_BUYER_PAY","total_amount":"1.00"}"#
        ),
        Ok(PaymentStatus::AwaitingPayment { next_action: None })
    );
    assert_eq!(
        q(
            r#"{"code":"10000","msg":"Success","out_trade_no":"MG_1","trade_status":"TRADE_PENDING"}"#
        ),
        Ok(PaymentStatus::Unrecognized("TRADE_PENDING".into()))
    );
    assert_eq!(
        q(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}"#
        ),
        Ok(PaymentStatus::NotFound)
    );
    assert!(matches!(
        q(
            r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error"}"#
        ),
        Err(AdapterError::Indeterminate { .. })
    ));
    // An unsigned success is never believed.
    let unsigned = HttpResponse {
        status: 200,
        headers: vec![],
        body: br#"{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_status":"TRADE_SUCCESS","trade_no":"T","total_amount":"1.00"},"sign":""}"#.to_vec(),
       received_at: time::OffsetDateTime::UNIX_EPOCH,    };
    assert!(matches!(
        a.parse_query(&order(), &unsigned),
        Err(AdapterError::Protocol(_))
    ));
    // Signed by someone else.
    let forged = adapter("2021000122671080", &fixture(APP_PUBLIC));
    let resp = signed_response(
        "alipay.trade.query",
        r#"{"code":"10000","msg":"Success","trade_no":"T1","trade_status":"TRADE_SUCCESS","total_amount":"1.00"}"#,
    );
    assert!(matches!(
        forged.parse_query(&order(), &resp),
        Err(AdapterError::Protocol(_))
    ));
    // Garbage and 5xx.
    for (status, body) in [
        (200, &b"<html>busy</html>"[..]),
        (502, b""),
        (200, b"{\"a\":"),
    ] {
        let resp = HttpResponse {
            status,
            headers: vec![],
            body: body.to_vec(),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        assert!(matches!(
            a.parse_query(&order(), &resp),
            Err(AdapterError::Protocol(_))
        ));
    }
}

#[test]
fn escaped_slashes_verify_as_sent_or_unescaped() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let node = r#"{"code":"10000","msg":"Success","out_trade_no":"MG_1","qr_code":"https:\/\/qr.alipay.com\/bax1"}"#;
    let req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "MG_1".into(),
        amount: Money::new(100, Currency::CNY),
        method: PaymentMethod::AlipayQr,
        subject: "s".into(),
        description: None,
        return_url: None,
        notify_url: "https://gw.example/n".into(),
        expires_at: datetime!(2030-01-01 0:00 UTC),
        payer: Default::default(),
    };
    let expected = Ok(PaymentStatus::AwaitingPayment {
        next_action: Some(NextAction::DisplayQr {
            qr_data: "https://qr.alipay.com/bax1".into(),
        }),
    });
    assert_eq!(
        a.parse_create(
            &cx(),
            &req,
            &signed_response("alipay.trade.precreate", node)
        ),
        expected
    );
    // Signed over the unescaped text but sent escaped (the Java SDK's fallback).
    let signer = RsaSigner::from_pem(&fixture(SANDBOX_PRIVATE)).unwrap();
    let sign = signer
        .sign_base64(node.replace("\\/", "/").as_bytes())
        .unwrap();
    let body = format!(r#"{{"alipay_trade_precreate_response":{node},"sign":"{sign}"}}"#);
    let resp = HttpResponse {
        status: 200,
        headers: vec![],
        body: body.into_bytes(),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    assert_eq!(a.parse_create(&cx(), &req, &resp), expected);
}

#[test]
fn refund_close_and_refund_query_outcomes() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let refund = RefundRequest {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        payment_created_at: time::OffsetDateTime::UNIX_EPOCH,
        payment_provider_ref: None,
        provider_order_id: "MG_1".into(),
        provider_refund_id: "MGR_1".into(),
        amount: Money::new(40, Currency::CNY),
        payment_amount: Money::new(100, Currency::CNY),
        reason: None,
        notify_url: None,
    };
    let r = |node: &str| a.parse_refund(&refund, &signed_response("alipay.trade.refund", node));
    assert_eq!(
        r(
            r#"{"code":"10000","msg":"Success","trade_no":"T1","fund_change":"Y","refund_fee":"0.40"}"#
        ),
        Ok(RefundStatus::Succeeded {
            provider_ref: Some("T1".into())
        })
    );
    assert!(matches!(
        r(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.REFUND_AMT_NOT_EQUAL_TOTAL","sub_msg":"x"}"#
        ),
        Ok(RefundStatus::Failed { .. })
    ));
    assert!(matches!(
        r(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"x"}"#
        ),
        Err(AdapterError::Indeterminate { .. })
    ));
    let rq = |node: &str| {
        a.parse_refund_query(
            &refund,
            &signed_response("alipay.trade.fastpay.refund.query", node),
        )
    };
    assert_eq!(
        rq(r#"{"code":"10000","msg":"Success","out_trade_no":"MG_1"}"#),
        Ok(RefundStatus::NotFound)
    );
    assert_eq!(
        rq(r#"{"code":"10000","msg":"Success","trade_no":"T1","refund_amount":"0.40"}"#),
        Ok(RefundStatus::Succeeded {
            provider_ref: Some("T1".into())
        })
    );
    assert!(rq(r#"{"code":"10000","msg":"Success","refund_amount":"0.41"}"#).is_err());
    let c = |node: &str| a.parse_close(&order(), &signed_response("alipay.trade.close", node));
    assert_eq!(
        c(r#"{"code":"10000","msg":"Success"}"#),
        Ok(CloseStatus::Closed)
    );
    assert_eq!(
        c(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"x"}"#
        ),
        Ok(CloseStatus::NotFound)
    );
    assert!(matches!(
        c(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_STATUS_ERROR","sub_msg":"x"}"#
        ),
        Ok(CloseStatus::Conflict { .. })
    ));
    // A gateway-level signature rejection.
    let resp = HttpResponse {
        status: 200,
        headers: vec![],
        body: br#"{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"x"},"sign":""}"#.to_vec(),
       received_at: time::OffsetDateTime::UNIX_EPOCH,    };
    assert!(matches!(
        a.parse_close(&order(), &resp),
        Err(AdapterError::Rejected { .. })
    ));
}

#[test]
fn rejects_non_cny_and_bad_order_numbers_before_sending() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let mut req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "MG_1".into(),
        amount: Money::new(100, Currency::parse("USD").unwrap()),
        method: PaymentMethod::AlipayQr,
        subject: "s".into(),
        description: None,
        return_url: None,
        notify_url: "https://gw.example/n".into(),
        expires_at: datetime!(2024-05-13 10:49:20 UTC),
        payer: Default::default(),
    };
    assert!(matches!(
        a.prepare_create(&cx(), &req),
        Err(AdapterError::InvalidParameter {
            param: "currency",
            ..
        })
    ));
    // Over Alipay's 100,000,000.00 CNY per trade: refused, naming the API's parameter.
    req.amount = Money::new(10_000_000_001, Currency::CNY);
    assert!(matches!(
        a.prepare_create(&cx(), &req),
        Err(AdapterError::InvalidParameter {
            param: "amount",
            ..
        })
    ));
    req.amount = Money::new(100, Currency::CNY);
    req.provider_order_id = "bad-id!".into();
    assert!(matches!(
        a.prepare_create(&cx(), &req),
        Err(AdapterError::InvalidRequest(_))
    ));
}

#[test]
fn barcode_pay_request_and_outcomes() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let req = CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "pay_TILL1".into(),
        amount: Money::new(2500, Currency::CNY),
        method: PaymentMethod::AlipayPaymentCode,
        subject: "Counter sale".into(),
        description: None,
        return_url: None,
        notify_url: "https://gw.example/notify/alipay/m/a".into(),
        expires_at: datetime!(2024-05-13 10:49:20 UTC),
        payer: moongate_contract::Payer {
            payment_code: Some("284567890123456789".into()),
            ..Default::default()
        },
    };
    let Prepared::Send(request) = a.prepare_create(&cx(), &req).unwrap() else {
        panic!("alipay.trade.pay is a server call");
    };
    let query = form(request.url.split_once('?').unwrap().1);
    assert_eq!(query["method"], "alipay.trade.pay");
    let body = form(std::str::from_utf8(&request.body).unwrap());
    assert_eq!(
        body["biz_content"],
        r#"{"out_trade_no":"pay_TILL1","total_amount":"25.00","subject":"Counter sale","product_code":"FACE_TO_FACE_PAYMENT","timeout_express":"60m","scene":"bar_code","auth_code":"284567890123456789"}"#
    );
    let answer =
        |node: &str| a.parse_create(&cx(), &req, &signed_response("alipay.trade.pay", node));
    assert!(matches!(
        answer(r#"{"code":"10000","msg":"Success","trade_no":"T9","out_trade_no":"pay_TILL1","total_amount":"25.00","gmt_payment":"2024-05-13 17:49:30"}"#),
        Ok(PaymentStatus::Succeeded { amount, paid_at: Some(_), .. }) if amount.minor == 2500
    ));
    assert_eq!(
        answer(
            r#"{"code":"10003","msg":"等待用户付款","trade_no":"T9","out_trade_no":"pay_TILL1"}"#
        )
        .unwrap(),
        PaymentStatus::AwaitingPayment {
            next_action: Some(moongate_contract::NextAction::AwaitShopperConfirmation)
        }
    );
    assert!(matches!(
        answer(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.PAYMENT_AUTH_CODE_INVALID","sub_msg":"x"}"#
        ),
        Ok(PaymentStatus::Failed { .. })
    ));
    assert!(matches!(
        answer(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"x"}"#
        ),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        answer(
            r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"x"}"#
        ),
        Err(AdapterError::Indeterminate { .. })
    ));
    // A WeChat code is refused before anything is sent.
    let mut wechat_code = req.clone();
    wechat_code.payer.payment_code = Some("134567890123456789".into());
    assert!(matches!(
        a.prepare_create(&cx(), &wechat_code),
        Err(AdapterError::InvalidRequest(_))
    ));
}

#[test]
fn bill_download_request_and_answers() {
    use moongate_contract::StatementLocation;
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let http = a
        .prepare_statement(&cx(), time::macros::date!(2019 - 09 - 16))
        .unwrap();
    let (_, query) = http.url.split_once('?').unwrap();
    let query = form(query);
    let body = form(std::str::from_utf8(&http.body).unwrap());
    assert_eq!(
        query["method"],
        "alipay.data.dataservice.bill.downloadurl.query"
    );
    assert_eq!(
        body["biz_content"],
        r#"{"bill_type":"trade","bill_date":"2019-09-16"}"#
    );
    let method = "alipay.data.dataservice.bill.downloadurl.query";
    let url = "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&userId=20881234567890120156&fileType=csv.zip&bizDates=20190916&downloadFileName=20881234567890120156_20190916.csv.zip&fileId=%2Ftrade%2F20881234567890120156%2F20190916.csv.zip&timestamp=1568600000&token=abc";
    let node = format!(
        r#"{{"code":"10000","msg":"Success","bill_download_url":"{}"}}"#,
        url.replace('/', "\\/")
    );
    assert_eq!(
        a.parse_statement(&signed_response(method, &node)).unwrap(),
        StatementLocation::Download {
            url: url.to_owned(),
            sha1: None
        }
    );
    // No trades that day: an empty statement, not an error.
    let none = r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"账单不存在"}"#;
    assert_eq!(
        a.parse_statement(&signed_response(method, none)).unwrap(),
        StatementLocation::Empty
    );
    // Today's bill (or a bad date) is not given: an error, never an empty day.
    let today = r#"{"code":"40004","msg":"Business Failed","sub_code":"isv.invalid-arguments","sub_msg":"参数不合法"}"#;
    assert!(a.parse_statement(&signed_response(method, today)).is_err());
    // The download is a plain GET of the link, with a browser-like user agent, over https
    // (Alipay's link says http: the bill has no hash, so TLS to Alipay is what vouches for it).
    let get = a.prepare_statement_download(&cx(), url).unwrap();
    assert_eq!(get.method, HttpMethod::Get);
    assert_eq!(get.url, url.replacen("http://", "https://", 1));
    assert!(
        get.headers
            .iter()
            .any(|(k, v)| k == "user-agent" && v.starts_with("Mozilla/5.0"))
    );
    // Only Alipay's own hosts (or the configured gateway's origin, a sandbox).
    for bad in [
        "file:///etc/passwd",
        "http://evil.example/downloadBillFile.resource?token=abc",
        "https://dwbillcenter.alipay.com.evil.example/downloadBillFile.resource",
        "http://dwbillcenter.alipay.com@evil.example/downloadBillFile.resource",
        "http://127.0.0.1:1/downloadBillFile.resource",
    ] {
        assert!(
            matches!(
                a.prepare_statement_download(&cx(), bad),
                Err(AdapterError::Protocol(_))
            ),
            "{bad} was accepted"
        );
    }
}

/// A JSAPI order for the payer `buyer`.
fn jsapi_order(buyer: &str) -> CreatePayment {
    CreatePayment {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "pay_JSAPI1".into(),
        amount: Money::new(1800, Currency::CNY),
        method: PaymentMethod::AlipayJsapi,
        subject: "Dumplings".into(),
        description: None,
        return_url: None,
        notify_url: "https://gw.example/notify/alipay/m/a".into(),
        expires_at: datetime!(2024-05-13 10:19:20 UTC),
        payer: moongate_contract::Payer {
            openid: Some(buyer.into()),
            ..Default::default()
        },
    }
}

#[test]
fn jsapi_is_trade_create_for_the_named_buyer_and_only_with_the_product() {
    let plain = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC));
    let req = jsapi_order("2088102150477652");
    // Without the JSAPI product the app neither declares nor creates it.
    assert!(
        !plain
            .capabilities()
            .supports_method(PaymentMethod::AlipayJsapi)
    );
    assert!(plain.payer_identity().is_none());
    assert!(matches!(
        plain.prepare_create(&cx(), &req),
        Err(AdapterError::Unsupported { .. })
    ));
    let a = plain.with_jsapi(true);
    assert!(a.capabilities().supports_method(PaymentMethod::AlipayJsapi));
    let Prepared::Send(request) = a.prepare_create(&cx(), &req).unwrap() else {
        panic!("alipay.trade.create is a server call");
    };
    let query = form(request.url.split_once('?').unwrap().1);
    assert_eq!(query["method"], "alipay.trade.create");
    assert_eq!(query["notify_url"], "https://gw.example/notify/alipay/m/a");
    let body = form(std::str::from_utf8(&request.body).unwrap());
    assert_eq!(
        body["biz_content"],
        r#"{"out_trade_no":"pay_JSAPI1","total_amount":"18.00","subject":"Dumplings","product_code":"JSAPI_PAY","timeout_express":"30m","buyer_id":"2088102150477652"}"#
    );
    // An open id (apps since the OpenID change) goes as buyer_open_id.
    let Prepared::Send(request) = a
        .prepare_create(
            &cx(),
            &jsapi_order("074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"),
        )
        .unwrap()
    else {
        panic!("a server call");
    };
    let body = form(std::str::from_utf8(&request.body).unwrap());
    assert!(
        body["biz_content"]
            .ends_with(r#""buyer_open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"}"#),
        "{}",
        body["biz_content"]
    );
    let mut nobody = req.clone();
    nobody.payer.openid = None;
    assert!(matches!(
        a.prepare_create(&cx(), &nobody),
        Err(AdapterError::InvalidRequest(_))
    ));
    let answer =
        |node: &str| a.parse_create(&cx(), &req, &signed_response("alipay.trade.create", node));
    assert_eq!(
        answer(r#"{"code":"10000","msg":"Success","out_trade_no":"pay_JSAPI1","trade_no":"2024051322001400001"}"#)
            .unwrap(),
        PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::AlipayJsapi {
                trade_no: "2024051322001400001".into()
            })
        }
    );
    assert!(matches!(
        answer(r#"{"code":"10000","msg":"Success","out_trade_no":"pay_OTHER","trade_no":"T"}"#),
        Err(AdapterError::Protocol(_))
    ));
    assert!(matches!(
        answer(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.INVALID_PARAMETER","sub_msg":"x"}"#
        ),
        Ok(PaymentStatus::Failed { .. })
    ));
    assert!(matches!(
        answer(
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"x"}"#
        ),
        Err(AdapterError::Indeterminate { .. })
    ));
}

#[test]
fn auth_base_link_exchange_and_answers() {
    let a = adapter("2021000122671080", &fixture(SANDBOX_PUBLIC))
        .with_jsapi(true)
        .with_user_authorize_url(
            "https://openauth-sandbox.dl.alipaydev.com/oauth2/publicAppAuthorize.htm",
        );
    let identity = a.payer_identity().unwrap();
    assert_eq!(
        identity.identity_url("https://gw.example/cashier/identity", "s-1"),
        "https://openauth-sandbox.dl.alipaydev.com/oauth2/publicAppAuthorize.htm?app_id=2021000122671080&scope=auth_base&redirect_uri=https%3A%2F%2Fgw.example%2Fcashier%2Fidentity&state=s-1"
    );
    assert_eq!(identity.identity_code_parameter(), "auth_code");
    // The exchange: grant_type and code are the method's own parameters (no biz_content),
    // in the body, signed with the rest.
    let request = identity
        .prepare_identity(&cx(), "ca34ea491e7146cc87d25fca24c4cD11")
        .unwrap();
    let query = form(request.url.split_once('?').unwrap().1);
    let body = form(std::str::from_utf8(&request.body).unwrap());
    assert_eq!(query["method"], "alipay.system.oauth.token");
    assert_eq!(body.len(), 2, "{body:?}");
    assert_eq!(body["grant_type"], "authorization_code");
    assert_eq!(body["code"], "ca34ea491e7146cc87d25fca24c4cD11");
    let all: Vec<(&str, &str)> = query
        .iter()
        .chain(body.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let content = sign_content(all, SignRule::Request);
    assert!(content.starts_with("app_id=2021000122671080&charset=utf-8&code=ca34ea491e7146cc87d25fca24c4cD11&format=JSON&grant_type=authorization_code&method=alipay.system.oauth.token&"), "{content}");
    let verifier = RsaVerifier::from_pem(&fixture(APP_PUBLIC)).unwrap();
    assert!(verifier.verify_base64(content.as_bytes(), &query["sign"]));
    // Alipay's success carries no code; the id is user_id or, for newer apps, open_id.
    let token =
        |node: &str| identity.parse_identity(&signed_response("alipay.system.oauth.token", node));
    assert_eq!(
        token(r#"{"user_id":"2088102150477652","access_token":"20120823ac6ffaa4d2d84e7384bf983531473993","expires_in":"3600","refresh_token":"20120823ac6ffdsdf2d84e7384bf983531473993","re_expires_in":"3600"}"#).unwrap(),
        "2088102150477652"
    );
    assert_eq!(
        token(r#"{"open_id":"074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5","access_token":"a","expires_in":300}"#).unwrap(),
        "074a1CcTG1LelxKe4xQC0zgNdId0nxi95b5lsNpazWYoCo5"
    );
    assert!(matches!(
        token(r#"{"access_token":"a"}"#),
        Err(AdapterError::Protocol(_))
    ));
    // A spent or foreign code: error_response 40002, a refusal.
    let signer = RsaSigner::from_pem(&fixture(SANDBOX_PRIVATE)).unwrap();
    let node = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.code-invalid","sub_msg":"授权码code无效"}"#;
    let refused = HttpResponse {
        status: 200,
        headers: vec![],
        body: format!(
            r#"{{"error_response":{node},"sign":"{}"}}"#,
            signer.sign_base64(node.as_bytes()).unwrap()
        )
        .into_bytes(),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    assert!(matches!(
        identity.parse_identity(&refused),
        Err(AdapterError::Rejected { code, .. }) if code == "isv.code-invalid"
    ));
    // An unsigned success is not believed.
    let unsigned = HttpResponse {
        status: 200,
        headers: vec![],
        body: br#"{"alipay_system_oauth_token_response":{"user_id":"2088102150477652","access_token":"a"}}"#.to_vec(),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
    };
    assert!(matches!(
        identity.parse_identity(&unsigned),
        Err(AdapterError::Protocol(_))
    ));
}
