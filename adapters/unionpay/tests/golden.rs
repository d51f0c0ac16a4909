//! The vendor's vectors (`../shared/reference/more-wallets.md` §1.8): V1 a request signature,
//! V2 a consume result and V3 a raw refund answer, both signed by UnionPay's test environment
//! with a certificate that has since expired, so the clock is fixed at the day they were sent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use moongate_adapter_unionpay::trust::{Trust, VerifyError};
use moongate_adapter_unionpay::{raw, sign};
use moongate_contract::crypto::RsaSigner;
use moongate_contract::x509::{ChainError, X509};
use time::macros::datetime;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../fixtures/unionpay/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn trust() -> Trust {
    Trust::from_pem(
        &fixture("cfca-test-oca1.pem"),
        &fixture("cfca-test-root.pem"),
    )
    .unwrap()
}

/// V2's fields: its signed string split raw (every value non-empty), plus its signature.
fn v2_fields(signed: &str, signature: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = raw::parse(signed)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    fields.push(("signature".into(), signature.trim().to_owned()));
    fields
}

fn borrowed(fields: &[(String, String)]) -> Vec<(&str, &str)> {
    fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[test]
fn v1_a_request_signs_the_hex_of_its_sorted_string() {
    let merchant = X509::from_pem(&fixture("test-merchant-cert.pem")).unwrap();
    // `certId` is the merchant certificate's serial in decimal.
    assert_eq!(merchant.serial_decimal(), "69903319369");
    let unionpay = X509::from_pem(&fixture("unionpay-test-sign-cert.pem")).unwrap();
    assert_eq!(unionpay.serial_decimal(), "69678957876");
    assert_eq!(
        unionpay.common_name(),
        Some("041@8310000000083040@中国银联股份有限公司@00016495")
    );
    let fields = [
        ("version", "5.1.0"),
        ("encoding", "utf-8"),
        ("signMethod", "01"),
        ("txnType", "01"),
        ("txnSubType", "01"),
        ("bizType", "000201"),
        ("channelType", "07"),
        ("accessType", "0"),
        ("merId", "777290058167151"),
        ("orderId", "yansongda20220903065448"),
        ("txnTime", "20220903065448"),
        ("txnAmt", "1"),
        ("currencyCode", "156"),
        ("frontUrl", "https://yansongda.cn/unipay/return"),
        ("backUrl", "https://yansongda.cn/unipay/notify"),
        ("certId", "69903319369"),
        ("reqReserved", ""),
    ];
    let string = sign::sign_string(fields);
    assert_eq!(
        string,
        "accessType=0&backUrl=https://yansongda.cn/unipay/notify&bizType=000201&certId=69903319369&channelType=07&currencyCode=156&encoding=utf-8&frontUrl=https://yansongda.cn/unipay/return&merId=777290058167151&orderId=yansongda20220903065448&signMethod=01&txnAmt=1&txnSubType=01&txnTime=20220903065448&txnType=01&version=5.1.0"
    );
    assert_eq!(string.len(), 319);
    assert_eq!(
        sign::digest_hex(&string),
        "ed98378474101f21eae704450b15b9495ba5ed4b23afd59e6c9ce2ca9ce9419d"
    );
    let signer = RsaSigner::from_pem(&fixture("test-merchant-private-key.pem")).unwrap();
    assert_eq!(
        sign::signature(&signer, fields).unwrap(),
        "CJ0Hh6WC0YldYMi2cIi7rjOvV4IJyzhqgj8KKNeRWZz+2csPVlDcnP1f4YfykVww6NDimsl2zE+oQAm7lH8qiU5f8ojVH+P62uMe1yqb2WoNlIM45REg6bhfUPvATgecVplnKIPdFUGdRZ97va+ZVbla75HwtskZnDykmr9rkYaSg7PcGuilEwHcb2rV+BNkCi3bi4fYELjYlE1a7Imv/cSLRyXkPS1jzF0HUIUiVA6P98DYh0GbsgqRZqPYsGocFJs9jZoAlu44RygzDKjK/n8iwhHNH61IFaADdGp+uLQsol6kR/DRpF1pZgO7lsuK0YuaL6pfN6dtkJO9prbu6Q=="
    );
}

#[test]
fn v2_a_consume_result_verifies_with_its_inline_certificate_when_it_was_valid() {
    let signed = fixture("v2-consume-signed.txt");
    assert_eq!(signed.len(), 2331);
    assert_eq!(
        sign::digest_hex(&signed),
        "39be34ceac545612fdca7c9bfc765aba9959ab14e840cc111d3ebdd507b0d371"
    );
    let fields = v2_fields(&signed, &fixture("v2-consume-signature.txt"));
    let fields = borrowed(&fields);
    assert_eq!(sign::sign_string(fields.iter().copied()), signed);
    let sent = datetime!(2022-09-08 13:22:06 +08:00).unix_timestamp();
    assert_eq!(trust().verify(&fields, sent), Ok(()));
    // Today the certificate has expired, and a strict verifier says so.
    let now = datetime!(2026-12-01 00:00 UTC).unix_timestamp();
    assert_eq!(
        trust().verify(&fields, now),
        Err(VerifyError::Chain(ChainError::OutsideValidity("leaf")))
    );
    // One changed field breaks the signature.
    let mut tampered = fields.clone();
    for field in &mut tampered {
        if field.0 == "settleAmt" {
            field.1 = "2";
        }
    }
    assert_eq!(
        trust().verify(&tampered, sent),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn v3_a_raw_refund_answer_keeps_its_plus_signs_and_line_ends() {
    let body = fixture("v3-refund-answer.txt");
    let fields = raw::parse(&body).unwrap();
    // On the wire `signPubKeyCert` comes after `version`; the sign string sorts it in.
    let string = sign::sign_string(fields.iter().copied());
    assert_eq!(string.len(), 1901);
    assert_eq!(
        sign::digest_hex(&string),
        "e48da059a3baee5367050c84375bc1eeaa2666a3647f257b49d96604f71fa367"
    );
    assert_eq!(raw::field(&fields, "respMsg"), Some("成功[0000000]"));
    let sent = datetime!(2024-01-05 16:58:42 +08:00).unix_timestamp();
    assert_eq!(trust().verify(&fields, sent), Ok(()));
    // Decoding the body as a form (`+` to a space) would break it: the certificate no longer
    // decodes, and with it restored the signature does not verify.
    let decoded = body.replace('+', " ");
    let fields = raw::parse(&decoded).unwrap();
    assert!(matches!(
        trust().verify(&fields, sent),
        Err(VerifyError::Certificate(_))
    ));
    let original = raw::parse(&body).unwrap();
    let cert = raw::field(&original, "signPubKeyCert").unwrap();
    let fields: Vec<(&str, &str)> = fields
        .into_iter()
        .map(|(k, v)| {
            if k == "signPubKeyCert" {
                (k, cert)
            } else {
                (k, v)
            }
        })
        .collect();
    assert_eq!(
        trust().verify(&fields, sent),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn only_a_unionpay_certificate_chained_to_the_configured_root_is_trusted() {
    let signed = fixture("v2-consume-signed.txt");
    let fields = v2_fields(&signed, &fixture("v2-consume-signature.txt"));
    let sent = datetime!(2022-09-08 13:22:06 +08:00).unix_timestamp();
    let with_certificate = |pem: &str| -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(k, v)| {
                let v = if k == "signPubKeyCert" { pem } else { v };
                (k.clone(), v.to_owned())
            })
            .collect()
    };
    // A certificate of the same CA that is not UnionPay's (the merchant's own).
    let merchant = with_certificate(&fixture("test-merchant-cert.pem"));
    assert!(matches!(
        trust().verify(&borrowed(&merchant), sent),
        Err(VerifyError::NotUnionPay(cn)) if cn.contains("700000000000001")
    ));
    // A self-signed certificate, and the root itself, do not chain through the middle.
    let root = with_certificate(&fixture("cfca-test-root.pem"));
    assert_eq!(
        trust().verify(&borrowed(&root), sent),
        Err(VerifyError::Chain(ChainError::WrongIssuer("leaf")))
    );
    // Trust configured with another root refuses UnionPay's genuine certificate.
    let foreign = Trust::from_pem(
        &fixture("cfca-test-oca1.pem"),
        &fixture("test-merchant-cert.pem"),
    )
    .unwrap();
    assert_eq!(
        foreign.verify(&borrowed(&fields), sent),
        Err(VerifyError::Chain(ChainError::NotCa("root")))
    );
    let swapped = Trust::from_pem(
        &fixture("cfca-test-root.pem"),
        &fixture("cfca-test-oca1.pem"),
    )
    .unwrap();
    assert_eq!(
        swapped.verify(&borrowed(&fields), sent),
        Err(VerifyError::Chain(ChainError::WrongIssuer("leaf")))
    );
    // No certificate, garbage, or no signature.
    let without: Vec<(&str, &str)> = borrowed(&fields)
        .into_iter()
        .filter(|(k, _)| *k != "signPubKeyCert")
        .collect();
    assert_eq!(
        trust().verify(&without, sent),
        Err(VerifyError::NoCertificate)
    );
    let garbage =
        with_certificate("-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----");
    assert!(matches!(
        trust().verify(&borrowed(&garbage), sent),
        Err(VerifyError::Certificate(_))
    ));
    let unsigned: Vec<(&str, &str)> = borrowed(&fields)
        .into_iter()
        .filter(|(k, _)| *k != "signature")
        .collect();
    assert_eq!(trust().verify(&unsigned, sent), Err(VerifyError::Unsigned));
}

#[test]
fn a_qr_apply_carries_the_common_fields_and_verifies_with_the_merchant_certificate() {
    use moongate_adapter_unionpay::{mapping, request};
    use moongate_contract::{Currency, Money};
    let merchant = request::Merchant::from_pem(
        "777290058167151",
        &fixture("test-merchant-private-key.pem"),
        &fixture("test-merchant-cert.pem"),
    )
    .unwrap();
    assert_eq!(merchant.cert_id(), "69903319369");
    let order = mapping::order_id("pay_01KBQ3Z5V7W9X1Y3Z5A7B9C1D3").unwrap();
    let at = datetime!(2026-12-01 10:00:00 +08:00);
    let operation = request::qr_apply(
        &order,
        &mapping::txn_time(at).unwrap(),
        Money::new(8888, Currency::CNY),
        "https://gw.example/notify/unionpay/m/a",
        &mapping::txn_time(at + time::Duration::minutes(15)).unwrap(),
    )
    .unwrap();
    let fields = merchant.signed(operation).unwrap();
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    for (key, value) in [
        ("version", "5.1.0"),
        ("encoding", "utf-8"),
        ("signMethod", "01"),
        ("accessType", "0"),
        ("merId", "777290058167151"),
        ("certId", "69903319369"),
        ("txnType", "01"),
        ("txnSubType", "07"),
        ("bizType", "000000"),
        ("channelType", "08"),
        ("orderId", "pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3"),
        ("txnTime", "20261201100000"),
        ("txnAmt", "8888"),
        ("currencyCode", "156"),
        ("payTimeout", "20261201101500"),
    ] {
        assert_eq!(get(key), Some(value), "{key}");
    }
    // Its signature verifies with the merchant's certificate, as UnionPay checks it.
    let certificate = X509::from_pem(&fixture("test-merchant-cert.pem")).unwrap();
    let signature = get("signature").unwrap();
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert!(sign::verifies(
        &certificate.verifier(),
        pairs.iter().copied(),
        signature
    ));
    // The body is a form whose fields decode to the signed ones (`+` in the base64 signature
    // is sent encoded).
    let body = request::form_body(&fields);
    let decoded: Vec<(String, String)> = form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(decoded, fields);
    // Other currencies are refused before anything is sent.
    assert!(
        request::qr_apply(
            &order,
            "20261201100000",
            Money::new(100, Currency::parse("USD").unwrap()),
            "https://gw.example/n",
            "20261201101500"
        )
        .is_err()
    );
}

#[test]
fn refunds_and_undos_reverse_the_consume_under_an_order_of_their_own() {
    use moongate_adapter_unionpay::request::{self, Reversal};
    use moongate_contract::{Currency, Money};
    for (kind, txn_type) in [(Reversal::Undo, "31"), (Reversal::Refund, "04")] {
        let fields = request::reverse(
            kind,
            "re01KBQ3Z5V7W9X1Y3Z5A7B9C1D4",
            "20261201120000",
            Money::new(100, Currency::CNY),
            "782209081322060674028",
            "https://gw.example/notify/unionpay/m/a",
            "pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3",
        )
        .unwrap();
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("txnType"), Some(txn_type));
        assert_eq!(get("txnSubType"), Some("00"));
        assert_eq!(get("orderId"), Some("re01KBQ3Z5V7W9X1Y3Z5A7B9C1D4"));
        assert_eq!(get("origQryId"), Some("782209081322060674028"));
        assert_eq!(get("txnAmt"), Some("100"));
        assert_eq!(get("reqReserved"), Some("pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3"));
    }
}
