//! SHA256withRSA (PKCS#1 v1.5) signing and verification on `ring`, shared by the
//! Alipay and WeChat Pay adapters, plus the key-file decoding both need.
//!
//! `ring` is used rather than the RustCrypto `rsa` crate, whose signing is open to
//! the Marvin timing attack (RUSTSEC-2023-0071). `ring` verifies RSA with a bare
//! PKCS#1 `RSAPublicKey`, so the `SubjectPublicKeyInfo` wrapper that providers
//! publish (`MIIBIjAN…`) is unwrapped here by a small, bounds-checked DER reader.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};

/// Why a key could not be loaded or a signature not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Neither PEM nor bare base64 of a DER structure.
    #[error("not a PEM or base64 key")]
    Encoding,
    /// Decoded, but not an RSA key of a form we accept.
    #[error("not a usable RSA key: {0}")]
    Rejected(&'static str),
    /// The signing operation failed.
    #[error("signing failed")]
    Signing,
}

/// `k=v&k=v` of `pairs` in their order, nothing encoded: the string Alipay's and UnionPay's
/// signatures cover (each provider chooses and sorts the pairs).
pub fn join_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (index, (key, value)) in pairs.into_iter().enumerate() {
        if index > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// Decodes a PEM block, or a bare base64 body as providers' consoles hand out.
///
/// Returns the PEM label (empty for bare base64) and the DER bytes.
pub fn decode_pem(text: &str) -> Result<(String, Vec<u8>), KeyError> {
    let text = text.trim();
    let (label, body) = match text.strip_prefix("-----BEGIN ") {
        Some(rest) => {
            let (label, rest) = rest.split_once("-----").ok_or(KeyError::Encoding)?;
            let end_marker = format!("-----END {label}-----");
            let body = rest
                .split(end_marker.as_str())
                .next()
                .ok_or(KeyError::Encoding)?;
            if !rest.contains(end_marker.as_str()) {
                return Err(KeyError::Encoding);
            }
            (label.to_owned(), body)
        }
        None => (String::new(), text),
    };
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(compact.as_bytes())
        .map_err(|_| KeyError::Encoding)?;
    if der.is_empty() {
        return Err(KeyError::Encoding);
    }
    Ok((label, der))
}

/// An RSA private key that signs SHA256withRSA (PKCS#1 v1.5), as Alipay RSA2 and
/// WeChat Pay `WECHATPAY2-SHA256-RSA2048` require.
pub struct RsaSigner {
    key: RsaKeyPair,
    rng: SystemRandom,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigner([REDACTED])")
    }
}

impl RsaSigner {
    /// Loads a PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`) key, PEM or bare base64.
    pub fn from_pem(text: &str) -> Result<RsaSigner, KeyError> {
        let (label, der) = decode_pem(text)?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            "" => RsaKeyPair::from_pkcs8(&der).or_else(|_| RsaKeyPair::from_der(&der)),
            _ => return Err(KeyError::Rejected("unexpected PEM label for a private key")),
        }
        .map_err(|_| KeyError::Rejected("ring refused the private key"))?;
        RsaSigner::of(key)
    }

    /// Loads a PKCS#8 `PrivateKeyInfo` DER key (as a PKCS#12 store holds it).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<RsaSigner, KeyError> {
        let key = RsaKeyPair::from_pkcs8(der)
            .map_err(|_| KeyError::Rejected("ring refused the private key"))?;
        RsaSigner::of(key)
    }

    /// A signer of `key`, which must be at least 2048 bits.
    fn of(key: RsaKeyPair) -> Result<RsaSigner, KeyError> {
        if key.public().modulus_len() < 256 {
            return Err(KeyError::Rejected(
                "RSA keys shorter than 2048 bits are not accepted",
            ));
        }
        Ok(RsaSigner {
            key,
            rng: SystemRandom::new(),
        })
    }

    /// Signs `message` and returns the standard base64 signature (with padding, no line breaks).
    pub fn sign_base64(&self, message: &[u8]) -> Result<String, KeyError> {
        let mut signature = vec![0_u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &self.rng,
                message,
                &mut signature,
            )
            .map_err(|_| KeyError::Signing)?;
        Ok(STANDARD.encode(signature))
    }

    /// The matching public key as PKCS#1 `RSAPublicKey` DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref().to_vec()
    }
}

/// An RSA public key that verifies SHA256withRSA signatures.
#[derive(Clone)]
pub struct RsaVerifier {
    rsa_public_key: Vec<u8>,
}

impl fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaVerifier({} bytes)", self.rsa_public_key.len())
    }
}

impl RsaVerifier {
    /// Loads a `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1), PEM or bare base64.
    pub fn from_pem(text: &str) -> Result<RsaVerifier, KeyError> {
        let (label, der) = decode_pem(text)?;
        let rsa_public_key = match label.as_str() {
            "RSA PUBLIC KEY" => der,
            "PUBLIC KEY" => spki_rsa_public_key(&der)?,
            "" => spki_rsa_public_key(&der).unwrap_or(der),
            _ => return Err(KeyError::Rejected("unexpected PEM label for a public key")),
        };
        Ok(RsaVerifier { rsa_public_key })
    }

    /// A verifier for a PKCS#1 `RSAPublicKey` (DER).
    pub fn from_pkcs1(rsa_public_key: Vec<u8>) -> RsaVerifier {
        RsaVerifier { rsa_public_key }
    }

    /// Builds a verifier from PKCS#1 `RSAPublicKey` DER.
    pub fn from_rsa_public_key_der(der: Vec<u8>) -> RsaVerifier {
        RsaVerifier {
            rsa_public_key: der,
        }
    }

    /// True when `signature_base64` is a valid SHA256withRSA signature of `message`.
    ///
    /// Malformed base64 is simply an invalid signature.
    pub fn verify_base64(&self, message: &[u8], signature_base64: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature_base64.trim().as_bytes()) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.rsa_public_key)
            .verify(message, &signature)
            .is_ok()
    }
}

/// What Moongate needs from an X.509 certificate: its serial (upper-case hex, as WeChat Pay
/// writes it in `Wechatpay-Serial`), its RSA key and when it expires. The certificate chain
/// is not checked here: platform certificates are pinned by configuration.
#[derive(Clone, Debug)]
pub struct Certificate {
    /// Serial number, upper-case hex without leading zero bytes.
    pub serial_hex: String,
    /// Verifier for the certified RSA key.
    pub verifier: RsaVerifier,
    /// `notAfter` as written (`YYMMDDHHMMSSZ` or `YYYYMMDDHHMMSSZ`).
    pub not_after: String,
}

impl Certificate {
    /// Reads a PEM `CERTIFICATE` (or bare base64 DER).
    pub fn from_pem(text: &str) -> Result<Certificate, KeyError> {
        let (label, der) = decode_pem(text)?;
        if !(label.is_empty() || label == "CERTIFICATE") {
            return Err(KeyError::Rejected("unexpected PEM label for a certificate"));
        }
        let (tag, certificate, _) = der_element(&der)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("certificate is not a SEQUENCE"));
        }
        let (tag, tbs, _) = der_element(certificate)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("tbsCertificate is not a SEQUENCE"));
        }
        let (mut tag, mut serial, mut rest) = der_element(tbs)?;
        if tag == 0xa0 {
            // Explicit [0] version.
            (tag, serial, rest) = der_element(rest)?;
        }
        if tag != 0x02 || serial.is_empty() {
            return Err(KeyError::Rejected("missing certificate serial number"));
        }
        let serial = match serial.split_first() {
            Some((0, tail)) if !tail.is_empty() => tail,
            _ => serial,
        };
        let serial_hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
        let (_, _, rest) = der_element(rest)?; // signature algorithm
        let (_, _, rest) = der_element(rest)?; // issuer
        let (tag, validity, rest) = der_element(rest)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("missing validity"));
        }
        let (_, _, after) = der_element(validity)?;
        let (tag, not_after, _) = der_element(after)?;
        if tag != 0x17 && tag != 0x18 {
            return Err(KeyError::Rejected("malformed notAfter"));
        }
        let not_after = String::from_utf8(not_after.to_vec())
            .map_err(|_| KeyError::Rejected("malformed notAfter"))?;
        let (_, _, rest) = der_element(rest)?; // subject
        let (tag, _, _) = der_element(rest)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("missing subjectPublicKeyInfo"));
        }
        let spki_len = rest.len() - der_element(rest)?.2.len();
        let spki = rest
            .get(..spki_len)
            .ok_or(KeyError::Rejected("malformed subjectPublicKeyInfo"))?;
        let verifier = RsaVerifier {
            rsa_public_key: spki_rsa_public_key(spki)?,
        };
        Ok(Certificate {
            serial_hex,
            verifier,
            not_after,
        })
    }

    /// `notAfter` as a Unix timestamp, when it parses.
    pub fn not_after_unix(&self) -> Option<i64> {
        crate::x509::x509_time(self.not_after.as_bytes())
    }
}

/// Reads one DER element at the start of `input`: (tag, contents, rest).
pub(crate) fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), KeyError> {
    let bad = KeyError::Rejected("malformed DER");
    let (&tag, rest) = input.split_first().ok_or(bad.clone())?;
    let (&first, rest) = rest.split_first().ok_or(bad.clone())?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(bad);
        }
        let (len_bytes, rest) = rest.split_at(count);
        let len = len_bytes
            .iter()
            .fold(0_usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return Err(bad);
    }
    let (contents, rest) = rest.split_at(len);
    Ok((tag, contents, rest))
}

/// Extracts the PKCS#1 `RSAPublicKey` from a `SubjectPublicKeyInfo` whose algorithm is rsaEncryption.
pub(crate) fn spki_rsa_public_key(spki: &[u8]) -> Result<Vec<u8>, KeyError> {
    const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (tag, outer, _) = der_element(spki)?;
    if tag != 0x30 {
        return Err(KeyError::Rejected("SubjectPublicKeyInfo is not a SEQUENCE"));
    }
    let (tag, algorithm, rest) = der_element(outer)?;
    if tag != 0x30 {
        return Err(KeyError::Rejected("missing AlgorithmIdentifier"));
    }
    let (tag, oid, _) = der_element(algorithm)?;
    if tag != 0x06 || oid != RSA_ENCRYPTION_OID {
        return Err(KeyError::Rejected("not an rsaEncryption key"));
    }
    let (tag, bits, _) = der_element(rest)?;
    match bits.split_first() {
        Some((0, key)) if tag == 0x03 => Ok(key.to_vec()),
        _ => Err(KeyError::Rejected("malformed subjectPublicKey BIT STRING")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_rejects_truncated_input() {
        assert!(der_element(&[]).is_err());
        assert!(der_element(&[0x30]).is_err());
        assert!(der_element(&[0x30, 0x05, 0x00]).is_err());
        assert!(der_element(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(spki_rsa_public_key(&[0x30, 0x00]).is_err());
    }

    #[test]
    fn pem_decoding_needs_a_matching_end_line() {
        assert_eq!(
            decode_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n"),
            Err(KeyError::Encoding)
        );
        assert_eq!(decode_pem("not base64 !!"), Err(KeyError::Encoding));
        let (label, der) =
            decode_pem("-----BEGIN X-----\nAAEC\n-----END X-----\n").expect("valid pem");
        assert_eq!((label.as_str(), der), ("X", vec![0, 1, 2]));
    }
}
