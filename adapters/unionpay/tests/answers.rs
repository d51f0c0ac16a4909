//! Answers signed by the sandbox's own test CA (`fixtures/unionpay/gen.sh`): what a verified
//! answer means, and that an answer is believed only with a trusted certificate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use moongate_adapter_unionpay::trust::Trust;
use moongate_adapter_unionpay::{answer, sign};
use moongate_contract::crypto::RsaSigner;
use moongate_contract::{AdapterError, Currency, Money, NextAction, PaymentStatus};

const ORDER: &str = "pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../fixtures/unionpay/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn trust() -> Trust {
    Trust::from_pem(&fixture("sandbox-middle.pem"), &fixture("sandbox-root.pem")).unwrap()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A raw answer body signed by the sandbox key, with `certificate` inline (CRLF line ends).
fn signed(fields: &[(&str, &str)], certificate: &str) -> String {
    let certificate = certificate
        .trim()
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let mut all: Vec<(&str, &str)> = fields.to_vec();
    all.push(("signPubKeyCert", &certificate));
    all.push(("signMethod", "01"));
    all.push(("version", "5.1.0"));
    let signer = RsaSigner::from_pem(&fixture("sandbox-sign-key.pem")).unwrap();
    let signature = sign::signature(&signer, all.iter().copied()).unwrap();
    let mut body = moongate_contract::crypto::join_pairs(all.iter().copied());
    body.push_str("&signature=");
    body.push_str(&signature);
    body
}

fn qr_answer(code: &str, order: &str) -> String {
    signed(
        &[
            ("respCode", code),
            ("respMsg", "成功[0000000]"),
            ("orderId", order),
            ("txnType", "01"),
            ("txnSubType", "07"),
            (
                "qrCode",
                "https://qr.95516.com/00010000/01234567890123456789+/=",
            ),
        ],
        &fixture("sandbox-sign-cert.pem"),
    )
}

#[test]
fn an_accepted_qr_apply_shows_its_code() {
    let status = answer::qr_apply(&qr_answer("00", ORDER), &trust(), now(), ORDER).unwrap();
    assert_eq!(
        status,
        PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::DisplayQr {
                qr_data: "https://qr.95516.com/00010000/01234567890123456789+/=".into()
            })
        }
    );
}

#[test]
fn refused_unknown_and_untrusted_answers_are_never_a_code() {
    assert!(matches!(
        answer::qr_apply(&qr_answer("30", ORDER), &trust(), now(), ORDER),
        Err(AdapterError::Rejected { code, .. }) if code == "30"
    ));
    // A duplicate order (a re-sent create whose first try arrived) is not a refusal of it.
    assert!(matches!(
        answer::qr_apply(&qr_answer("12", ORDER), &trust(), now(), ORDER),
        Err(AdapterError::Indeterminate { code, .. }) if code == "12"
    ));
    for unknown in ["03", "04", "05"] {
        assert!(matches!(
            answer::qr_apply(&qr_answer(unknown, ORDER), &trust(), now(), ORDER),
            Err(AdapterError::Indeterminate { .. })
        ));
    }
    // About another order.
    assert!(matches!(
        answer::qr_apply(
            &qr_answer("00", "pay01OTHER000000000000000000"),
            &trust(),
            now(),
            ORDER
        ),
        Err(AdapterError::Protocol(_))
    ));
    // Signed by a certificate of the same CA without UnionPay's name.
    let foreign = signed(
        &[("respCode", "00"), ("orderId", ORDER), ("qrCode", "x")],
        &fixture("sandbox-foreign-cert.pem"),
    );
    assert!(matches!(
        answer::qr_apply(&foreign, &trust(), now(), ORDER),
        Err(AdapterError::Protocol(reason)) if reason.contains("not UnionPay's")
    ));
    // Past the certificate's dates, and under another root.
    let later = now() + 7_000 * 86_400;
    assert!(matches!(
        answer::qr_apply(&qr_answer("00", ORDER), &trust(), later, ORDER),
        Err(AdapterError::Protocol(reason)) if reason.contains("not valid")
    ));
    let cfca = Trust::from_pem(
        &fixture("cfca-test-oca1.pem"),
        &fixture("cfca-test-root.pem"),
    )
    .unwrap();
    assert!(answer::qr_apply(&qr_answer("00", ORDER), &cfca, now(), ORDER).is_err());
    // A tampered field.
    let tampered = qr_answer("00", ORDER).replace("01234567890123456789", "99999999999999999999");
    assert!(matches!(
        answer::qr_apply(&tampered, &trust(), now(), ORDER),
        Err(AdapterError::Protocol(reason)) if reason.contains("does not verify")
    ));
}

#[test]
fn a_query_reads_the_orders_own_outcome() {
    let query = |resp: &str, orig: &str| {
        signed(
            &[
                ("respCode", resp),
                ("origRespCode", orig),
                ("orderId", ORDER),
                ("queryId", "782209081322060674028"),
                ("txnAmt", "8888"),
            ],
            &fixture("sandbox-sign-cert.pem"),
        )
    };
    let status = answer::query(&query("00", "00"), &trust(), now(), ORDER, Currency::CNY).unwrap();
    assert_eq!(
        status,
        PaymentStatus::Succeeded {
            provider_ref: "782209081322060674028".into(),
            amount: Money::new(8888, Currency::CNY),
            paid_at: None,
        }
    );
    assert_eq!(
        answer::query(&query("34", ""), &trust(), now(), ORDER, Currency::CNY).unwrap(),
        PaymentStatus::NotFound
    );
    assert_eq!(
        answer::query(&query("00", "04"), &trust(), now(), ORDER, Currency::CNY).unwrap(),
        PaymentStatus::AwaitingPayment { next_action: None }
    );
}

/// A notification form as UnionPay posts it: the signed fields, URL-encoded.
fn notification(fields: &[(&str, &str)], certificate: &str) -> Vec<u8> {
    let body = signed(fields, certificate);
    let fields = moongate_adapter_unionpay::raw::parse(&body).unwrap();
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
        .into_bytes()
}

#[test]
fn notifications_are_decoded_then_verified() {
    use moongate_adapter_unionpay::notify;
    let consume = [
        ("txnType", "01"),
        ("respCode", "00"),
        ("respMsg", "success"),
        ("orderId", ORDER),
        ("queryId", "782209081322060674028"),
        ("txnAmt", "8888"),
        ("settleDate", "1201"),
        // A value a form encodes (`+` and `=`), which must come back as signed.
        ("reqReserved", "a+b=c"),
    ];
    let body = notification(&consume, &fixture("sandbox-sign-cert.pem"));
    let notice = notify::parse(&body, &trust(), now()).unwrap();
    assert_eq!(notice.order_id, ORDER);
    assert_eq!(notice.settle_date.as_deref(), Some("1201"));
    assert_eq!(
        notice.consume_status(Currency::CNY),
        PaymentStatus::Succeeded {
            provider_ref: "782209081322060674028".into(),
            amount: Money::new(8888, Currency::CNY),
            paid_at: None,
        }
    );
    // Read raw (without decoding), the form does not verify: it is a form.
    assert!(
        answer::query(
            std::str::from_utf8(&body).unwrap(),
            &trust(),
            now(),
            ORDER,
            Currency::CNY
        )
        .is_err()
    );
    // A refund notification names the consume it reverses.
    let refund = notification(
        &[
            ("txnType", "04"),
            ("respCode", "00"),
            ("orderId", "re01KBQ3Z5V7W9X1Y3Z5A7B9C1D4"),
            ("queryId", "052401051658427863998"),
            ("origQryId", "782209081322060674028"),
            ("txnAmt", "100"),
        ],
        &fixture("sandbox-sign-cert.pem"),
    );
    let notice = notify::parse(&refund, &trust(), now()).unwrap();
    assert_eq!(
        (notice.txn_type.as_str(), notice.orig_qry_id.as_deref()),
        ("04", Some("782209081322060674028"))
    );
    // Forged, foreign, or repeated fields: refused.
    let forged = String::from_utf8(body.clone())
        .unwrap()
        .replace("txnAmt=8888", "txnAmt=9999");
    assert_eq!(
        notify::parse(forged.as_bytes(), &trust(), now()),
        Err(moongate_contract::NotificationError::BadSignature)
    );
    let foreign = notification(&consume, &fixture("sandbox-foreign-cert.pem"));
    assert_eq!(
        notify::parse(&foreign, &trust(), now()),
        Err(moongate_contract::NotificationError::BadSignature)
    );
    let mut repeated = body.clone();
    repeated.extend_from_slice(b"&txnAmt=1");
    assert!(matches!(
        notify::parse(&repeated, &trust(), now()),
        Err(moongate_contract::NotificationError::Malformed(_))
    ));
    // Not paid: left for a query, never a failure guessed from a notification.
    let declined = notification(
        &[
            ("txnType", "01"),
            ("respCode", "99"),
            ("orderId", ORDER),
            ("queryId", "1"),
            ("txnAmt", "8888"),
        ],
        &fixture("sandbox-sign-cert.pem"),
    );
    assert!(matches!(
        notify::parse(&declined, &trust(), now())
            .unwrap()
            .consume_status(Currency::CNY),
        PaymentStatus::Unrecognized(_)
    ));
}
