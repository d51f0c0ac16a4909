//! Alipay's public-key certificate mode (公钥证书模式): a request names the application's
//! certificate and Alipay's root bundle by SN (`app_cert_sn`, `alipay_root_cert_sn`), and an
//! answer names the Alipay certificate whose key signed it (`alipay_cert_sn`).
//!
//! Alipay defines an SN as its Java SDK computes it (`AlipaySignature.getCertSN`): the MD5,
//! in lowercase hex, of the issuer's name in RFC 2253 form (`X500Principal.getName()`)
//! followed by the serial number in decimal. The root SN (`getRootCertSN`) is the SNs of the
//! bundle's certificates signed with an RSA algorithm, in the bundle's order, joined with `_`
//! (Alipay's bundle also holds an ECDSA root, which the SDK leaves out). See
//! china-wallets.md A.9; `fixtures/alipay/certs/` holds test certificates and the SNs
//! computed for them by openssl and Python.

use md5::{Digest, Md5};
use moongate_contract::crypto::{KeyError, decode_pem};
use moongate_contract::x509::CertificateName;

/// The SN of one certificate.
pub fn cert_sn(name: &CertificateName) -> Result<String, KeyError> {
    let text = format!("{}{}", name.issuer_rfc2253()?, name.serial_decimal());
    Ok(hex::encode(Md5::digest(text.as_bytes())))
}

/// The SN of the certificate in a PEM text (the first, when it holds several).
pub fn cert_sn_of_pem(text: &str) -> Result<String, KeyError> {
    let first = certificates(text)?
        .into_iter()
        .next()
        .ok_or(KeyError::Rejected("no certificate in the file"))?;
    cert_sn(&CertificateName::from_der(&first)?)
}

/// `alipay_root_cert_sn` of a root bundle (PEM certificates one after another).
pub fn root_cert_sn(bundle: &str) -> Result<String, KeyError> {
    let mut sns = Vec::new();
    for der in certificates(bundle)? {
        let name = CertificateName::from_der(&der)?;
        if name.signed_with_rsa() {
            sns.push(cert_sn(&name)?);
        }
    }
    if sns.is_empty() {
        return Err(KeyError::Rejected(
            "the root bundle holds no RSA-signed certificate",
        ));
    }
    Ok(sns.join("_"))
}

/// The DER of each `CERTIFICATE` block of a PEM text, in order.
fn certificates(text: &str) -> Result<Vec<Vec<u8>>, KeyError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(END) {
        let (block, after) = rest.split_at(at + END.len());
        let (label, der) = decode_pem(block)?;
        if label != "CERTIFICATE" {
            return Err(KeyError::Rejected(
                "unexpected PEM label in a certificate file",
            ));
        }
        out.push(der);
        rest = after;
    }
    if !rest.trim().is_empty() {
        return Err(KeyError::Encoding);
    }
    Ok(out)
}
