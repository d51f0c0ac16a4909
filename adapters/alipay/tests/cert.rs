#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Certificate mode's SNs: Alipay's real root bundle and the certificates of the Node SDK's
//! tests with the SNs that SDK's tests expect, and `fixtures/alipay/certs/expected.txt`,
//! which openssl (the issuer in RFC 2253 form, the serial) and Python's hashlib (the MD5)
//! computed for our own test certificates (`fixtures/alipay/certs/gen.sh`), independently of
//! this crate.

use std::path::PathBuf;

use moongate_adapter_alipay::cert::{cert_sn_of_pem, root_cert_sn};
use moongate_contract::crypto::decode_pem;
use moongate_contract::x509::CertificateName;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/alipay/certs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(issuer, serial, sn)` of a line of `expected.txt`.
fn expected(which: &str) -> (String, String, String) {
    let text = fixture("expected.txt");
    let line = text
        .lines()
        .find(|l| l.split('\t').next() == Some(which))
        .unwrap_or_else(|| panic!("no {which} in expected.txt"));
    let fields: Vec<&str> = line.split('\t').collect();
    (fields[1].into(), fields[2].into(), fields[3].into())
}

/// alipay-sdk-nodejs-all `test/antcertutil.test.ts`: Alipay's root bundle (an SM2 root, two
/// RSA roots and an ECDSA one), an Alipay public-key certificate and an app certificate.
#[test]
fn the_node_sdks_vectors_and_alipays_own_root_bundle() {
    assert_eq!(
        root_cert_sn(&fixture("nodejs-sdk-alipayRootCert.crt")).unwrap(),
        "687b59193f3f462dd5336e5abf83c5d8_02941eef3187dddf3d3b83462e1dfcf6"
    );
    assert_eq!(
        cert_sn_of_pem(&fixture("nodejs-sdk-alipayCertPublicKey_RSA2.crt")).unwrap(),
        "7513daaaa48aa3ba2e4018d84402479c"
    );
    assert_eq!(
        cert_sn_of_pem(&fixture("nodejs-sdk-appCertPublicKey_2021001161683774.crt")).unwrap(),
        "866efef280dec9137a87d047ac446315"
    );
}

#[test]
fn a_certificates_sn_is_the_md5_of_its_issuer_and_serial() {
    for (which, file) in [
        ("app", "app_cert_public_key.crt"),
        ("alipay", "alipay_cert_public_key_rsa2.crt"),
    ] {
        let pem = fixture(file);
        let (issuer, serial, sn) = expected(which);
        let (_, der) = decode_pem(&pem).unwrap();
        let name = CertificateName::from_der(&der).unwrap();
        // The issuer holds a Chinese organisation name (UTF-8, unescaped in RFC 2253).
        assert_eq!(name.issuer_rfc2253().unwrap(), issuer, "{which}");
        assert_eq!(name.serial_decimal(), serial, "{which}");
        assert_eq!(cert_sn_of_pem(&pem).unwrap(), sn, "{which}");
    }
}

#[test]
fn the_root_sn_joins_the_rsa_signed_roots_and_leaves_out_the_ecdsa_one() {
    let (_, _, r1) = expected("root-r1");
    let (_, _, e1) = expected("root-e1");
    let (g3_issuer, _, g3) = expected("root-g3");
    // The third root's unit holds a comma, escaped in its RFC 2253 name.
    assert!(g3_issuer.contains("Network\\, Test"), "{g3_issuer}");
    let sn = root_cert_sn(&fixture("alipay_root_cert.crt")).unwrap();
    assert_eq!(sn, format!("{r1}_{g3}"));
    assert!(!sn.contains(&e1));
}

#[test]
fn a_file_without_an_rsa_root_or_with_junk_is_refused() {
    let bundle = fixture("alipay_root_cert.crt");
    // Only the ECDSA root.
    let blocks: Vec<&str> = bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(blocks.len(), 3);
    assert!(root_cert_sn(blocks[1]).is_err());
    assert!(root_cert_sn(&format!("{bundle}trailing text")).is_err());
    assert!(root_cert_sn("").is_err());
    assert!(cert_sn_of_pem("not a certificate").is_err());
}
