//! X.509 certificates traced to a configured root: for providers that send the certificate
//! of the key that signed an answer inside the answer (UnionPay's `signPubKeyCert`), which may
//! be trusted only once its chain, dates and subject check out.
//!
//! Parsed with the contract's bounds-checked DER reader; signatures checked with `ring`. Only
//! what a chain check needs is read: the signed part, the signature and its algorithm, serial,
//! issuer and subject (compared as DER), validity, the RSA key, the CA flag of
//! `basicConstraints`, and the subject's common name. Revocation is not checked (the
//! providers' own SDKs turn it off).
//!
//! [`CertificateName`] reads less, from a certificate with any kind of key: the algorithm,
//! serial and issuer that name it (Alipay's certificate SNs), with the issuer in RFC 2253 form.

use ring::signature::{self, UnparsedPublicKey};

use crate::crypto::{KeyError, RsaVerifier, decode_pem, der_element, spki_rsa_public_key};

/// One parsed certificate.
#[derive(Clone, Debug)]
pub struct X509 {
    /// The DER of `tbsCertificate` (what the issuer signed).
    tbs: Vec<u8>,
    /// The OID of the signature algorithm.
    algorithm: Vec<u8>,
    /// The issuer's signature.
    signature: Vec<u8>,
    /// The serial number, big-endian, without a leading zero byte.
    serial: Vec<u8>,
    /// The issuer name, as DER.
    issuer: Vec<u8>,
    /// The subject name, as DER.
    subject: Vec<u8>,
    /// Validity, Unix seconds.
    not_before: i64,
    not_after: i64,
    /// PKCS#1 `RSAPublicKey`.
    rsa_public_key: Vec<u8>,
    /// `basicConstraints` says it is a CA.
    ca: bool,
    /// The subject's common name (OID 2.5.4.3), when it has one.
    common_name: Option<String>,
}

/// Why a chain is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A certificate is outside its validity dates at the time of the check.
    #[error("the {0} certificate is not valid at this time")]
    OutsideValidity(&'static str),
    /// A certificate's issuer is not the next certificate's subject.
    #[error("the {0} certificate is not issued by the next one in the chain")]
    WrongIssuer(&'static str),
    /// An issuing certificate is not a CA.
    #[error("the {0} certificate is not a certification authority")]
    NotCa(&'static str),
    /// A signature in the chain does not verify.
    #[error("the signature on the {0} certificate does not verify")]
    BadSignature(&'static str),
}

const OID_SHA1_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05];
const OID_SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
const OID_SHA384_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const OID_SHA512_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

fn rejected(why: &'static str) -> KeyError {
    KeyError::Rejected(why)
}

/// One DER element read whole: the element with its tag and length, the tag, its contents,
/// and what follows it.
type Whole<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// The element at the start of `input` ([`Whole`]).
fn whole_element(input: &[u8]) -> Result<Whole<'_>, KeyError> {
    let (tag, contents, rest) = der_element(input)?;
    let element = input
        .get(..input.len() - rest.len())
        .ok_or(rejected("malformed DER"))?;
    Ok((element, tag, contents, rest))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), the forms RFC 5280
/// requires, to Unix seconds.
pub(crate) fn x509_time(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?.strip_suffix('Z')?;
    let full = match text.len() {
        12 => {
            let year: i32 = text.get(..2)?.parse().ok()?;
            format!("{}{text}", if year >= 50 { "19" } else { "20" })
        }
        14 => text.to_owned(),
        _ => return None,
    };
    let field = |range: std::ops::Range<usize>| -> Option<u8> { full.get(range)?.parse().ok() };
    let year: i32 = full.get(..4)?.parse().ok()?;
    let month = time::Month::try_from(field(4..6)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(6..8)?).ok()?;
    let clock = time::Time::from_hms(field(8..10)?, field(10..12)?, field(12..14)?).ok()?;
    Some(date.with_time(clock).assume_utc().unix_timestamp())
}

/// A validity time: `UTCTime` (tag 0x17) or `GeneralizedTime` (0x18).
fn validity_time(tag: u8, bytes: &[u8]) -> Option<i64> {
    match tag {
        0x17 if bytes.len() == 13 => x509_time(bytes),
        0x18 if bytes.len() == 15 => x509_time(bytes),
        _ => None,
    }
}

/// The common name in a DER `Name`, when there is one.
fn common_name(name: &[u8]) -> Result<Option<String>, KeyError> {
    let (_, mut sets, _) = der_element(name)?;
    while !sets.is_empty() {
        let (_, set, rest) = der_element(sets)?;
        sets = rest;
        let mut attributes = set;
        while !attributes.is_empty() {
            let (_, attribute, rest) = der_element(attributes)?;
            attributes = rest;
            let (_, oid, value) = der_element(attribute)?;
            if oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, text, _) = der_element(value)?;
            // UTF8String, PrintableString, IA5String; TeletexString (CFCA writes `@` names
            // in it) read as Latin-1, which its ASCII subset is.
            if !matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                return Err(rejected("unsupported common name string type"));
            }
            return directory_string(tag, text)
                .map(Some)
                .ok_or(rejected("common name"));
        }
    }
    Ok(None)
}

/// Whether the `[3]` extensions say `basicConstraints cA = TRUE`.
fn is_ca(extensions: &[u8]) -> Result<bool, KeyError> {
    let (_, mut list, _) = der_element(extensions)?;
    while !list.is_empty() {
        let (_, extension, rest) = der_element(list)?;
        list = rest;
        let (_, oid, rest) = der_element(extension)?;
        if oid != OID_BASIC_CONSTRAINTS {
            continue;
        }
        let (mut tag, mut value, mut rest) = der_element(rest)?;
        if tag == 0x01 {
            // `critical`
            (tag, value, rest) = der_element(rest)?;
        }
        let _ = rest;
        if tag != 0x04 {
            return Err(rejected("malformed basicConstraints"));
        }
        let (_, constraints, _) = der_element(value)?;
        return Ok(match constraints.split_first() {
            Some((0x01, _)) => {
                let (_, flag, _) = der_element(constraints)?;
                flag.first().is_some_and(|b| *b != 0)
            }
            _ => false,
        });
    }
    Ok(false)
}

impl X509 {
    /// Reads a PEM `CERTIFICATE` (line ends of any kind) or bare base64 DER.
    pub fn from_pem(text: &str) -> Result<X509, KeyError> {
        let (label, der) = decode_pem(text)?;
        if !(label.is_empty() || label == "CERTIFICATE") {
            return Err(rejected("unexpected PEM label for a certificate"));
        }
        X509::from_der(&der)
    }

    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<X509, KeyError> {
        let Head {
            tbs: tbs_element,
            algorithm,
            signature,
            serial,
            issuer,
            rest,
        } = head(der)?;
        let (_, validity, rest) = der_element(rest)?;
        let (tag, before, after) = der_element(validity)?;
        let not_before = validity_time(tag, before).ok_or(rejected("malformed notBefore"))?;
        let (tag, after, _) = der_element(after)?;
        let not_after = validity_time(tag, after).ok_or(rejected("malformed notAfter"))?;
        let (subject, _, _, rest) = whole_element(rest)?;
        let (spki, _, _, mut rest) = whole_element(rest)?;
        let rsa_public_key = spki_rsa_public_key(spki)?;
        let mut ca = false;
        while !rest.is_empty() {
            let (element, tag, _, next) = whole_element(rest)?;
            rest = next;
            if tag == 0xa3 {
                ca = is_ca_explicit(element)?;
            }
        }
        Ok(X509 {
            tbs: tbs_element.to_vec(),
            algorithm: algorithm.to_vec(),
            signature: signature.to_vec(),
            serial: serial.to_vec(),
            issuer: issuer.to_vec(),
            subject: subject.to_vec(),
            not_before,
            not_after,
            rsa_public_key,
            ca,
            common_name: common_name(subject)?,
        })
    }

    /// The serial number in decimal (UnionPay's `certId`).
    pub fn serial_decimal(&self) -> String {
        decimal(&self.serial)
    }

    /// The subject's common name.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// Whether `unix` (seconds) falls within the validity dates.
    pub fn valid_at(&self, unix: i64) -> bool {
        (self.not_before..=self.not_after).contains(&unix)
    }

    /// The certified key as PKCS#1 `RSAPublicKey` DER (compare with
    /// [`crate::crypto::RsaSigner::public_key_der`] to tell whether a private key is its pair).
    pub fn rsa_public_key_der(&self) -> &[u8] {
        &self.rsa_public_key
    }

    /// A verifier for the certified key.
    pub fn verifier(&self) -> RsaVerifier {
        RsaVerifier::from_pkcs1(self.rsa_public_key.clone())
    }

    /// Whether `issuer`'s key signed this certificate (and `issuer` is named as its issuer).
    fn issued_by(&self, issuer: &X509) -> bool {
        let algorithm: &dyn signature::VerificationAlgorithm = match self.algorithm.as_slice() {
            OID_SHA1_RSA => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            OID_SHA256_RSA => &signature::RSA_PKCS1_2048_8192_SHA256,
            OID_SHA384_RSA => &signature::RSA_PKCS1_2048_8192_SHA384,
            OID_SHA512_RSA => &signature::RSA_PKCS1_2048_8192_SHA512,
            _ => return false,
        };
        UnparsedPublicKey::new(algorithm, &issuer.rsa_public_key)
            .verify(&self.tbs, &self.signature)
            .is_ok()
    }

    /// Checks that this certificate chains through `middle` to the self-signed `root` and that
    /// all three are valid at `unix`.
    pub fn verify_chain(&self, middle: &X509, root: &X509, unix: i64) -> Result<(), ChainError> {
        for (certificate, name) in [(self, "leaf"), (middle, "middle"), (root, "root")] {
            if !certificate.valid_at(unix) {
                return Err(ChainError::OutsideValidity(name));
            }
        }
        for (certificate, name) in [(middle, "middle"), (root, "root")] {
            if !certificate.ca {
                return Err(ChainError::NotCa(name));
            }
        }
        for (certificate, issuer, name) in [
            (self, middle, "leaf"),
            (middle, root, "middle"),
            (root, root, "root"),
        ] {
            if certificate.issuer != issuer.subject {
                return Err(ChainError::WrongIssuer(name));
            }
            if !certificate.issued_by(issuer) {
                return Err(ChainError::BadSignature(name));
            }
        }
        Ok(())
    }
}

/// The parts of a certificate up to its issuer, whatever its key.
struct Head<'a> {
    /// The DER of `tbsCertificate`.
    tbs: &'a [u8],
    /// The OID of the signature algorithm.
    algorithm: &'a [u8],
    /// The issuer's signature.
    signature: &'a [u8],
    /// The serial number, big-endian, without a leading zero byte.
    serial: &'a [u8],
    /// The issuer name, as DER.
    issuer: &'a [u8],
    /// What follows the issuer in `tbsCertificate` (validity, subject, key, extensions).
    rest: &'a [u8],
}

fn head(der: &[u8]) -> Result<Head<'_>, KeyError> {
    let (tag, certificate, _) = der_element(der)?;
    if tag != 0x30 {
        return Err(rejected("certificate is not a SEQUENCE"));
    }
    let (tbs_element, tag, tbs, rest) = whole_element(certificate)?;
    if tag != 0x30 {
        return Err(rejected("tbsCertificate is not a SEQUENCE"));
    }
    let (_, algorithm, rest) = der_element(rest)?;
    let (_, algorithm, _) = der_element(algorithm)?;
    let (tag, signature, _) = der_element(rest)?;
    let signature = match signature.split_first() {
        Some((0, bits)) if tag == 0x03 => bits,
        _ => return Err(rejected("malformed signature BIT STRING")),
    };
    let (mut tag, mut serial, mut rest) = der_element(tbs)?;
    if tag == 0xa0 {
        (tag, serial, rest) = der_element(rest)?;
    }
    if tag != 0x02 || serial.is_empty() {
        return Err(rejected("missing certificate serial number"));
    }
    let serial = match serial.split_first() {
        Some((0, tail)) if !tail.is_empty() => tail,
        _ => serial,
    };
    let (_, _, rest) = der_element(rest)?; // the signature algorithm, again
    let (issuer, _, _, rest) = whole_element(rest)?;
    Ok(Head {
        tbs: tbs_element,
        algorithm,
        signature,
        serial,
        issuer,
        rest,
    })
}

/// A big-endian unsigned number in decimal.
fn decimal(big_endian: &[u8]) -> String {
    // Repeated division of the bytes by ten.
    let mut number = big_endian.to_vec();
    let mut digits = Vec::new();
    while number.iter().any(|b| *b != 0) {
        let mut remainder = 0_u32;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = u8::try_from(value / 10).unwrap_or(0);
            remainder = value % 10;
        }
        digits.push(char::from(b'0' + u8::try_from(remainder).unwrap_or(0)));
    }
    if digits.is_empty() {
        return "0".to_owned();
    }
    digits.iter().rev().collect()
}

/// What names a certificate, read from any certificate whatever its key (an ECDSA root in a
/// provider's bundle too): its signature algorithm, serial and issuer. Alipay's certificate
/// mode names certificates by these (`app_cert_sn`, `alipay_root_cert_sn`).
#[derive(Clone, Debug)]
pub struct CertificateName {
    algorithm: Vec<u8>,
    serial: Vec<u8>,
    issuer: Vec<u8>,
}

/// `1.2.840.113549.1.1`: PKCS#1, the arc of every RSA signature algorithm.
const OID_PKCS1_ARC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];

impl CertificateName {
    /// Reads a DER certificate's name parts.
    pub fn from_der(der: &[u8]) -> Result<CertificateName, KeyError> {
        let head = head(der)?;
        Ok(CertificateName {
            algorithm: head.algorithm.to_vec(),
            serial: head.serial.to_vec(),
            issuer: head.issuer.to_vec(),
        })
    }

    /// Whether the issuer signed it with an RSA algorithm (any digest).
    pub fn signed_with_rsa(&self) -> bool {
        self.algorithm.len() == OID_PKCS1_ARC.len() + 1 && self.algorithm.starts_with(OID_PKCS1_ARC)
    }

    /// The serial number in decimal.
    pub fn serial_decimal(&self) -> String {
        decimal(&self.serial)
    }

    /// The issuer's distinguished name in RFC 2253's string form, as Java's
    /// `X500Principal.getName()` writes it: the last RDN first, `,` between RDNs and `+`
    /// within one, the keywords `CN`, `C`, `L`, `ST`, `O`, `OU`, `STREET`, `DC` and `UID`
    /// (any other attribute as its dotted OID and `#` with the hex of its DER value), and
    /// `,=+<>#;"\` in values escaped with a backslash, as are a leading or trailing space.
    pub fn issuer_rfc2253(&self) -> Result<String, KeyError> {
        rfc2253(&self.issuer)
    }
}

/// A DER `Name` in RFC 2253's string form ([`CertificateName::issuer_rfc2253`]).
fn rfc2253(name: &[u8]) -> Result<String, KeyError> {
    let (tag, mut sets, _) = der_element(name)?;
    if tag != 0x30 {
        return Err(rejected("a name is not a SEQUENCE"));
    }
    let mut rdns = Vec::new();
    while !sets.is_empty() {
        let (tag, set, rest) = der_element(sets)?;
        if tag != 0x31 {
            return Err(rejected("an RDN is not a SET"));
        }
        sets = rest;
        let mut attributes = set;
        let mut values = Vec::new();
        while !attributes.is_empty() {
            let (_, attribute, rest) = der_element(attributes)?;
            attributes = rest;
            let (tag, oid, value) = der_element(attribute)?;
            if tag != 0x06 {
                return Err(rejected("an attribute type is not an OID"));
            }
            let (value_element, value_tag, text, _) = whole_element(value)?;
            let keyword = match oid {
                [0x55, 0x04, 0x03] => Some("CN"),
                [0x55, 0x04, 0x06] => Some("C"),
                [0x55, 0x04, 0x07] => Some("L"),
                [0x55, 0x04, 0x08] => Some("ST"),
                [0x55, 0x04, 0x0a] => Some("O"),
                [0x55, 0x04, 0x0b] => Some("OU"),
                [0x55, 0x04, 0x09] => Some("STREET"),
                [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => Some("DC"),
                [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => Some("UID"),
                _ => None,
            };
            let text = match (keyword, directory_string(value_tag, text)) {
                (Some(keyword), Some(text)) => format!("{keyword}={}", escape_rfc2253(&text)),
                (Some(keyword), None) => format!("{keyword}=#{}", hex::encode(value_element)),
                (None, _) => format!("{}=#{}", dotted_oid(oid)?, hex::encode(value_element)),
            };
            values.push(text);
        }
        rdns.push(values.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// The text of a directory string: UTF8String, PrintableString, IA5String, TeletexString
/// (read as Latin-1), BMPString (UTF-16) or UniversalString (UTF-32); `None` for any other.
fn directory_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        0x0c | 0x13 | 0x16 => String::from_utf8(bytes.to_vec()).ok(),
        0x14 => Some(bytes.iter().map(|b| char::from(*b)).collect()),
        0x1e => match bytes.as_chunks::<2>() {
            (pairs, []) => {
                let units: Vec<u16> = pairs.iter().map(|pair| u16::from_be_bytes(*pair)).collect();
                String::from_utf16(&units).ok()
            }
            _ => None,
        },
        0x1c => match bytes.as_chunks::<4>() {
            (quads, []) => quads
                .iter()
                .map(|quad| char::from_u32(u32::from_be_bytes(*quad)))
                .collect(),
            _ => None,
        },
        _ => None,
    }
}

fn escape_rfc2253(value: &str) -> String {
    let last = value.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        if ",=+<>#;\"\\".contains(c) || (c == ' ' && (i == 0 || i == last)) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An OID's contents in dotted form.
fn dotted_oid(oid: &[u8]) -> Result<String, KeyError> {
    let (first, rest) = oid.split_first().ok_or(rejected("empty OID"))?;
    // The first byte holds two arcs: 40 × the first (0, 1 or 2) + the second.
    let top = u64::from(*first / 40).min(2);
    let mut parts = vec![top, u64::from(*first) - 40 * top];
    let mut value: u64 = 0;
    for byte in rest {
        value = value
            .checked_mul(128)
            .ok_or(rejected("OID arc too large"))?
            | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            parts.push(value);
            value = 0;
        }
    }
    Ok(parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// `[3] EXPLICIT Extensions`: the SEQUENCE inside the context tag.
fn is_ca_explicit(element: &[u8]) -> Result<bool, KeyError> {
    let (_, inner, _) = der_element(element)?;
    is_ca(inner)
}

#[cfg(test)]
mod tests {
    use super::rfc2253;

    /// An attribute without an RFC 2253 keyword (here `emailAddress`, 1.2.840.113549.1.9.1)
    /// is written as its dotted OID and the hex of its DER value, as Java writes it; two
    /// attributes in one RDN are joined with `+`.
    #[test]
    fn an_attribute_without_a_keyword_is_its_oid_and_hex() {
        let email = [
            0x30, 0x10, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01, 0x16,
            0x03, b'a', b'@', b'b',
        ];
        let common_name = [0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'x'];
        let mut set = vec![0x31, u8::try_from(email.len() + common_name.len()).unwrap()];
        set.extend_from_slice(&email);
        set.extend_from_slice(&common_name);
        let mut name = vec![0x30, u8::try_from(set.len()).unwrap()];
        name.extend_from_slice(&set);
        assert_eq!(
            rfc2253(&name).unwrap(),
            "1.2.840.113549.1.9.1=#1603614062+CN=x"
        );
    }
}
