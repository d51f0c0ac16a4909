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
use moongate_contract::crypto::{KeyError, RsaSigner, RsaVerifier, decode_pem};
use moongate_contract::x509::{CertificateName, X509};

/// What certificate mode adds to an application: the two SNs every request carries and
/// Alipay's certificates by SN.
#[derive(Debug)]
pub struct CertificateKeys {
    /// `app_cert_sn`.
    pub app_cert_sn: String,
    /// `alipay_root_cert_sn`.
    pub root_cert_sn: String,
    /// Alipay's certificates as configured (current first): SN and key.
    pub alipay: Vec<(String, RsaVerifier)>,
}

/// Why certificate-mode keys did not load; [`CertificateError::setting`] names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The application certificate.
    #[error("{0}")]
    AppCert(KeyError),
    /// The application certificate certifies another key than `app_private_key`.
    #[error(
        "certifies another key than app_private_key (its SN {0}); use the certificate Alipay \
         issued for this private key"
    )]
    AppCertKeyMismatch(String),
    /// One of Alipay's certificates (index in `alipay_certs`).
    #[error("{1}")]
    AlipayCert(usize, KeyError),
    /// Two of Alipay's certificates have the same SN.
    #[error("the same certificate as an earlier entry (SN {1})")]
    DuplicateAlipayCert(usize, String),
    /// The root bundle.
    #[error("{0}")]
    RootCert(KeyError),
}

impl CertificateError {
    /// The setting at fault: `app_cert`, `alipay_certs[1]`, `alipay_root_cert`.
    pub fn setting(&self) -> String {
        match self {
            CertificateError::AppCert(_) | CertificateError::AppCertKeyMismatch(_) => {
                "app_cert".to_owned()
            }
            CertificateError::AlipayCert(index, _)
            | CertificateError::DuplicateAlipayCert(index, _) => format!("alipay_certs[{index}]"),
            CertificateError::RootCert(_) => "alipay_root_cert".to_owned(),
        }
    }
}

impl CertificateKeys {
    /// Reads the application certificate (checked against the application's private key),
    /// Alipay's certificates and the root bundle, all PEM.
    pub fn load(
        signer: &RsaSigner,
        app_cert: &str,
        alipay_certs: &[&str],
        root_bundle: &str,
    ) -> Result<CertificateKeys, CertificateError> {
        let (app_cert_sn, app_key) = certified(app_cert).map_err(CertificateError::AppCert)?;
        if app_key.rsa_public_key_der() != signer.public_key_der().as_slice() {
            return Err(CertificateError::AppCertKeyMismatch(app_cert_sn));
        }
        let mut alipay: Vec<(String, RsaVerifier)> = Vec::new();
        for (index, text) in alipay_certs.iter().enumerate() {
            let (sn, certificate) =
                certified(text).map_err(|e| CertificateError::AlipayCert(index, e))?;
            if alipay.iter().any(|(known, _)| *known == sn) {
                return Err(CertificateError::DuplicateAlipayCert(index, sn));
            }
            alipay.push((sn, certificate.verifier()));
        }
        let root_cert_sn = root_cert_sn(root_bundle).map_err(CertificateError::RootCert)?;
        Ok(CertificateKeys {
            app_cert_sn,
            root_cert_sn,
            alipay,
        })
    }

    /// The key of the Alipay certificate an answer names.
    pub fn alipay_key(&self, sn: &str) -> Option<&RsaVerifier> {
        self.alipay
            .iter()
            .find(|(known, _)| known == sn)
            .map(|(_, key)| key)
    }
}

/// The SN and the parsed certificate of the first certificate of a PEM text (Alipay's
/// certificate files may carry the issuing intermediate after it).
fn certified(text: &str) -> Result<(String, X509), KeyError> {
    let first = first_certificate(text)?;
    let sn = cert_sn(&CertificateName::from_der(&first)?)?;
    Ok((sn, X509::from_der(&first)?))
}

fn first_certificate(text: &str) -> Result<Vec<u8>, KeyError> {
    certificates(text)?
        .into_iter()
        .next()
        .ok_or(KeyError::Rejected("no certificate in the file"))
}

/// The SN of one certificate.
pub fn cert_sn(name: &CertificateName) -> Result<String, KeyError> {
    let text = format!("{}{}", name.issuer_rfc2253()?, name.serial_decimal());
    Ok(hex::encode(Md5::digest(text.as_bytes())))
}

/// The SN of the certificate in a PEM text (the first, when it holds several).
pub fn cert_sn_of_pem(text: &str) -> Result<String, KeyError> {
    cert_sn(&CertificateName::from_der(&first_certificate(text)?)?)
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
