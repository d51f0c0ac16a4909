//! The JD-N1 vector: a real JD Pay notification from JD's demo merchant opens with its
//! `desKey`, and its sign verifies with JD's test key over exactly the XML without `<sign>`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use moongate_adapter_jdpay::envelope::{DesKey, EnvelopeError};
use moongate_adapter_jdpay::sign::{payload, sign, split_sign, verify_xml};
use moongate_contract::rsa_raw::{TypeOneSigner, TypeOneVerifier};

fn fixture(name: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/jdpay/");
    std::fs::read_to_string(format!("{root}{name}")).unwrap()
}

fn key() -> DesKey {
    DesKey::from_base64(&fixture("test-des-key.txt")).unwrap()
}

fn jd() -> TypeOneVerifier {
    TypeOneVerifier::from_base64_or_pem(&fixture("jd-test-public-key.txt")).unwrap()
}

#[test]
fn jd_n1_opens_to_the_notification_python_decrypted() {
    let xml = key().open(&fixture("jd-n1-encrypt.txt")).unwrap();
    assert_eq!(xml.len(), 842);
    assert_eq!(xml, fixture("jd-n1-notification.xml"));
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" ?><jdpay>"));
}

#[test]
fn jd_n1_sign_verifies_over_the_xml_without_its_sign_element_only() {
    let xml = fixture("jd-n1-notification.xml");
    let (content, _) = split_sign(&xml).unwrap();
    assert_eq!(
        payload(&content),
        fixture("jd-n1-sign-content.sha256").trim()
    );
    assert!(verify_xml(&jd(), &xml));
    // Without the declaration, with whitespace changed, or with a byte changed: no.
    let declaration_end = xml.find("?>").unwrap() + 2;
    assert!(!verify_xml(&jd(), &xml[declaration_end..]));
    assert!(!verify_xml(
        &jd(),
        &xml.replacen("<amount>1</amount>", "<amount>2</amount>", 1)
    ));
    assert!(!verify_xml(
        &jd(),
        &xml.replacen("><jdpay>", "> <jdpay>", 1)
    ));
    // Another key does not open it; two sign elements are refused.
    let other = TypeOneVerifier::from_base64_or_pem(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/keys/sandbox-alipay-public-key.pem"
        ))
        .unwrap(),
    )
    .unwrap();
    assert!(!verify_xml(&other, &xml));
    let doubled = xml.replacen("<note>", "<sign>x</sign><note>", 1);
    assert!(!verify_xml(&jd(), &doubled));
    // The block itself: the signature's length must be the modulus's, and it must be below it.
    use base64::Engine;
    let (_, sign) = split_sign(&xml).unwrap();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(sign)
        .unwrap();
    assert_eq!(signature.len(), 128);
    assert_eq!(
        jd().recover(&signature).unwrap(),
        payload(&content).into_bytes()
    );
    assert_eq!(jd().recover(&signature[1..]), None);
    assert_eq!(jd().recover(&[0xff; 128]), None);
    let mut flipped = signature.clone();
    flipped[60] ^= 1;
    assert_eq!(jd().recover(&flipped), None);
}

#[test]
fn an_envelope_round_trips_and_refuses_a_wrong_key_or_framing() {
    let key = key();
    for text in ["", "180", "我有一只小毛驴我从来也不骑", &"x".repeat(1000)] {
        let sealed = key.seal(text).unwrap();
        assert_eq!(key.open(&sealed).unwrap(), text);
        let hex = key.seal_hex(text).unwrap();
        assert_eq!(hex, hex.to_lowercase());
        assert_eq!(hex.len() % 16, 0);
    }
    let other = DesKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYX").unwrap();
    let sealed = key.seal("<jdpay></jdpay>").unwrap();
    assert!(matches!(
        other.open(&sealed),
        Err(EnvelopeError::Framing | EnvelopeError::Utf8)
    ));
    assert_eq!(key.open_hex("abc"), Err(EnvelopeError::Encoding("not hex")));
    assert_eq!(
        key.open_hex("00112233"),
        Err(EnvelopeError::Encoding("not whole 8-byte blocks"))
    );
    assert_eq!(
        DesKey::from_base64("c2hvcnQ=").err(),
        Some(EnvelopeError::Key)
    );
}

#[test]
fn the_merchant_key_signs_the_demo_query_as_python_computed() {
    let key = TypeOneSigner::from_base64_or_pem(&fixture("test-merchant-private-key.txt")).unwrap();
    let content = fixture("jd-query-content.xml");
    let signed = sign(&key, &content).unwrap();
    // Type-1 signing is deterministic: blinding must not change a byte.
    assert_eq!(signed, fixture("jd-query-sign.txt").trim());
    assert_eq!(sign(&key, &content).unwrap(), signed);
    // Its public half verifies it inside the message, wherever the element sits.
    let xml = content.replacen(
        "<cert></cert>",
        &format!("<sign>{signed}</sign><cert></cert>"),
        1,
    );
    assert!(verify_xml(key.verifier(), &xml));
    assert!(!verify_xml(&jd(), &xml));
    // A payload the key's block cannot hold is refused.
    assert!(key.sign(&[b'a'; 118]).is_err());
    assert!(key.sign(&[b'a'; 117]).is_ok());
}

#[test]
fn keys_of_2048_bits_sign_too_and_a_key_whose_parts_disagree_is_refused() {
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/keys/nodejs-sdk-app-private-key.pem"
    ))
    .unwrap();
    let key = TypeOneSigner::from_base64_or_pem(&pem).unwrap();
    let signed = sign(&key, "<jdpay></jdpay>").unwrap();
    let xml = format!("<jdpay><sign>{signed}</sign></jdpay>");
    assert!(verify_xml(key.verifier(), &xml));
    // Change one byte deep inside the JD test key (a CRT part): refused, never a panic.
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut der = engine
        .decode(fixture("test-merchant-private-key.txt").trim())
        .unwrap();
    let len = der.len();
    der[len - 10] ^= 0x40;
    assert!(TypeOneSigner::from_base64_or_pem(&engine.encode(&der)).is_err());
    assert!(TypeOneSigner::from_base64_or_pem("bm90IGEga2V5").is_err());
}

#[test]
fn a_second_notification_a_refund_opens_and_verifies_too() {
    let xml = key().open(&fixture("jd-n2-encrypt.txt")).unwrap();
    assert_eq!(xml, fixture("jd-n2-notification.xml"));
    assert!(xml.contains("<tradeType>2</tradeType><oTradeNum>asd784374823472389</oTradeNum>"));
    let (content, _) = split_sign(&xml).unwrap();
    assert_eq!(
        payload(&content),
        "eb7be5b878612fd0f7c6b5877f7f9e7ac37d9345eed9146bda44b188d0678f2e"
    );
    assert!(verify_xml(&jd(), &xml));
    assert!(!verify_xml(
        &jd(),
        &xml.replacen("<status>1</status>", "<status>2</status>", 1)
    ));
}
