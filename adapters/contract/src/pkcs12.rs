//! PKCS#12 (`.pfx` / `.p12`, RFC 7292) key stores, read for their one private key and their
//! certificates: how UnionPay hands a merchant its signing key (`acp_…_sign.pfx`, with a
//! password).
//!
//! Read with the contract's bounds-checked DER reader. The store's MAC is checked first (HMAC
//! with the RFC 7292 appendix B key, SHA-1 or SHA-256), so a wrong password is told apart from
//! a damaged file. Encryption schemes: `pbeWithSHAAnd3-KeyTripleDES-CBC` (what UnionPay's and
//! Java's older stores use, and the test merchant's file) and PBES2 with PBKDF2 (HMAC-SHA-1 or
//! -SHA-256) and AES-CBC (what OpenSSL 3 writes by default). RC2 and RC4 (the legacy 40-bit
//! schemes) are refused by name: re-export such a file with `openssl pkcs12 -export`.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use ring::{digest, hmac, pbkdf2};

use crate::crypto::{KeyError, der_element};

const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
const OID_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
];
const OID_SHROUDED_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];
const OID_CERT_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
];
const OID_X509_CERTIFICATE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];
const OID_PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
const OID_PBE_SHA1_LEGACY: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01];
const OID_PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
const OID_PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
const OID_HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
const OID_HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
const OID_AES128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
const OID_AES192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
const OID_AES256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];

/// More key-derivation rounds than this are refused (real stores use 2,000–600,000).
const MAX_ITERATIONS: u64 = 10_000_000;

/// What a key store holds that Moongate uses.
pub struct Pkcs12 {
    /// The private key, PKCS#8 `PrivateKeyInfo` DER.
    pub private_key_pkcs8: Vec<u8>,
    /// Every certificate in the store, DER, in store order.
    pub certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Pkcs12 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs12")
            .field("private_key_pkcs8", &"[REDACTED]")
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

fn bad(why: &'static str) -> KeyError {
    KeyError::Rejected(why)
}

/// The contents of the element at the start of `input` if its tag is `tag`, and the rest.
fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), KeyError> {
    let (found, contents, rest) = der_element(input)?;
    if found != tag {
        return Err(bad(what));
    }
    Ok((contents, rest))
}

/// A small non-negative INTEGER.
fn small_integer(contents: &[u8]) -> Result<u64, KeyError> {
    if contents.is_empty() || contents.len() > 8 || contents.first().is_some_and(|b| *b >= 0x80) {
        return Err(bad("an INTEGER out of range in the key store"));
    }
    Ok(contents
        .iter()
        .fold(0_u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Iterations as given, held to [`MAX_ITERATIONS`].
fn iterations(contents: &[u8]) -> Result<u32, KeyError> {
    let count = small_integer(contents)?;
    if count == 0 || count > MAX_ITERATIONS {
        return Err(bad("the key store's iteration count is out of range"));
    }
    u32::try_from(count).map_err(|_| bad("the key store's iteration count is out of range"))
}

/// The password as a `BMPString` (UTF-16 big-endian, two zero bytes at the end): what the
/// PKCS#12 key derivation takes.
fn bmp_password(password: &str) -> Vec<u8> {
    let mut out: Vec<u8> = password
        .encode_utf16()
        .flat_map(|unit| unit.to_be_bytes())
        .collect();
    out.extend_from_slice(&[0, 0]);
    out
}

/// The hash of a PKCS#12 derivation: SHA-1 or SHA-256, both with 64-byte blocks.
#[derive(Clone, Copy)]
enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn algorithm(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
        }
    }
}

/// RFC 7292 appendix B.2: `n` bytes of key material for purpose `id` (1 key, 2 IV, 3 MAC).
fn derive(hash: Hash, password: &[u8], salt: &[u8], id: u8, rounds: u32, n: usize) -> Vec<u8> {
    const V: usize = 64;
    let stretch = |input: &[u8]| -> Vec<u8> {
        if input.is_empty() {
            return Vec::new();
        }
        let len = V * input.len().div_ceil(V);
        input.iter().copied().cycle().take(len).collect()
    };
    let mut i_block = stretch(salt);
    i_block.extend(stretch(password));
    let d_block = [id; V];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let mut context = digest::Context::new(hash.algorithm());
        context.update(&d_block);
        context.update(&i_block);
        let mut a = context.finish().as_ref().to_vec();
        for _ in 1..rounds {
            a = digest::digest(hash.algorithm(), &a).as_ref().to_vec();
        }
        out.extend_from_slice(&a);
        if out.len() >= n {
            break;
        }
        // I_j = (I_j + B + 1) mod 2^512 for each 64-byte block, B being A repeated.
        let b: Vec<u8> = a.iter().copied().cycle().take(V).collect();
        for chunk in i_block.chunks_mut(V) {
            let mut carry = 1_u16;
            for (byte, add) in chunk.iter_mut().rev().zip(b.iter().rev()) {
                let sum = u16::from(*byte) + u16::from(*add) + carry;
                *byte = (sum & 0xff) as u8;
                carry = sum >> 8;
            }
        }
    }
    out.truncate(n);
    out
}

/// Decrypts `data` under the scheme `algorithm` (an AlgorithmIdentifier's contents).
fn decrypt(algorithm: &[u8], data: &[u8], password: &str) -> Result<Vec<u8>, KeyError> {
    let (oid, params) = expect(algorithm, 0x06, "an encryption algorithm without its OID")?;
    let wrong = || bad("the key store does not decrypt (a wrong password?)");
    if oid == OID_PBE_SHA1_3DES {
        let (params, _) = expect(params, 0x30, "malformed PBE parameters")?;
        let (salt, rest) = expect(params, 0x04, "PBE parameters without a salt")?;
        let (count, _) = expect(rest, 0x02, "PBE parameters without an iteration count")?;
        let rounds = iterations(count)?;
        let bmp = bmp_password(password);
        let key = derive(Hash::Sha1, &bmp, salt, 1, rounds, 24);
        let iv = derive(Hash::Sha1, &bmp, salt, 2, rounds, 8);
        return cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(data)
            .map_err(|_| wrong());
    }
    if oid.starts_with(OID_PBE_SHA1_LEGACY) {
        return Err(bad(
            "the key store uses a legacy RC2 or RC4 scheme; re-export it with `openssl pkcs12 -export` (3DES or AES)",
        ));
    }
    if oid != OID_PBES2 {
        return Err(bad(
            "the key store uses an encryption scheme Moongate does not read",
        ));
    }
    let (params, _) = expect(params, 0x30, "malformed PBES2 parameters")?;
    let (kdf, rest) = expect(params, 0x30, "PBES2 parameters without a key derivation")?;
    let (scheme, _) = expect(rest, 0x30, "PBES2 parameters without an encryption scheme")?;
    let (kdf_oid, kdf_params) = expect(kdf, 0x06, "PBES2 key derivation without its OID")?;
    if kdf_oid != OID_PBKDF2 {
        return Err(bad("PBES2 with a key derivation other than PBKDF2"));
    }
    let (kdf_params, _) = expect(kdf_params, 0x30, "malformed PBKDF2 parameters")?;
    let (salt, rest) = expect(kdf_params, 0x04, "PBKDF2 parameters without a salt")?;
    let (count, mut rest) = expect(rest, 0x02, "PBKDF2 parameters without an iteration count")?;
    let rounds = iterations(count)?;
    let mut key_length = None;
    if let Ok((length, after)) = expect(rest, 0x02, "") {
        key_length = Some(small_integer(length)?);
        rest = after;
    }
    let prf = if rest.is_empty() {
        pbkdf2::PBKDF2_HMAC_SHA1
    } else {
        let (prf, _) = expect(rest, 0x30, "malformed PBKDF2 PRF")?;
        let (prf_oid, _) = expect(prf, 0x06, "PBKDF2 PRF without its OID")?;
        match prf_oid {
            OID_HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
            OID_HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
            _ => return Err(bad("PBKDF2 with a PRF other than HMAC-SHA-1 or -SHA-256")),
        }
    };
    let (cipher_oid, iv) = expect(scheme, 0x06, "PBES2 encryption scheme without its OID")?;
    let (iv, _) = expect(iv, 0x04, "PBES2 encryption scheme without an IV")?;
    let size = match cipher_oid {
        OID_AES128_CBC => 16,
        OID_AES192_CBC => 24,
        OID_AES256_CBC => 32,
        _ => return Err(bad("PBES2 with a cipher other than AES-CBC")),
    };
    if key_length.is_some_and(|l| l != size as u64) {
        return Err(bad("PBKDF2 key length does not fit the cipher"));
    }
    let rounds = std::num::NonZeroU32::new(rounds).ok_or_else(wrong)?;
    let mut key = vec![0_u8; size];
    // PBES2 takes the password's own bytes (UTF-8), not the BMPString.
    pbkdf2::derive(prf, rounds, salt, password.as_bytes(), &mut key);
    let plain = match size {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(data),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&key, iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(data),
        _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, iv)
            .map_err(|_| wrong())?
            .decrypt_padded_vec_mut::<Pkcs7>(data),
    };
    plain.map_err(|_| wrong())
}

/// Checks the store's MAC over `auth_safe` (the authenticated contents).
fn check_mac(mac_data: &[u8], auth_safe: &[u8], password: &str) -> Result<(), KeyError> {
    let (mac_data, _) = expect(mac_data, 0x30, "malformed MacData")?;
    let (digest_info, rest) = expect(mac_data, 0x30, "MacData without its digest")?;
    let (salt, rest) = expect(rest, 0x04, "MacData without a salt")?;
    let rounds = if rest.is_empty() {
        1
    } else {
        iterations(expect(rest, 0x02, "malformed MacData iterations")?.0)?
    };
    let (algorithm, rest) = expect(digest_info, 0x30, "MacData without its algorithm")?;
    let (expected, _) = expect(rest, 0x04, "MacData without its value")?;
    let (oid, _) = expect(algorithm, 0x06, "MacData algorithm without its OID")?;
    let (hash, mac) = match oid {
        OID_SHA1 => (Hash::Sha1, hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY),
        OID_SHA256 => (Hash::Sha256, hmac::HMAC_SHA256),
        _ => {
            return Err(bad(
                "the key store's MAC is neither HMAC-SHA-1 nor HMAC-SHA-256",
            ));
        }
    };
    let size = hash.algorithm().output_len();
    let key = derive(hash, &bmp_password(password), salt, 3, rounds, size);
    hmac::verify(&hmac::Key::new(mac, &key), auth_safe, expected)
        .map_err(|_| bad("the key store's MAC does not verify (a wrong password?)"))
}

/// The bags of one `SafeContents`, into `found`.
fn read_bags(contents: &[u8], password: &str, found: &mut Pkcs12Parts) -> Result<(), KeyError> {
    let (mut bags, _) = expect(contents, 0x30, "malformed SafeContents")?;
    while !bags.is_empty() {
        let (bag, rest) = expect(bags, 0x30, "malformed SafeBag")?;
        bags = rest;
        let (bag_id, rest) = expect(bag, 0x06, "a SafeBag without its type")?;
        let (value, _) = expect(rest, 0xa0, "a SafeBag without its value")?;
        match bag_id {
            OID_KEY_BAG => found.keys.push(element(value)?.to_vec()),
            OID_SHROUDED_KEY_BAG => {
                let (info, _) = expect(value, 0x30, "malformed EncryptedPrivateKeyInfo")?;
                let (algorithm, rest) = expect(info, 0x30, "a shrouded key without its scheme")?;
                let (data, _) = expect(rest, 0x04, "a shrouded key without its data")?;
                found.keys.push(decrypt(algorithm, data, password)?);
            }
            OID_CERT_BAG => {
                let (cert_bag, _) = expect(value, 0x30, "malformed CertBag")?;
                let (kind, rest) = expect(cert_bag, 0x06, "a CertBag without its type")?;
                if kind == OID_X509_CERTIFICATE {
                    let (inner, _) = expect(rest, 0xa0, "a CertBag without its value")?;
                    let (der, _) = expect(inner, 0x04, "a CertBag value that is not DER")?;
                    found.certificates.push(der.to_vec());
                }
            }
            // CRLs, secrets and nested bags carry nothing Moongate uses.
            _ => {}
        }
    }
    Ok(())
}

/// The first element of `input`, whole (tag and length included).
fn element(input: &[u8]) -> Result<&[u8], KeyError> {
    let (_, _, rest) = der_element(input)?;
    input
        .get(..input.len() - rest.len())
        .ok_or(bad("malformed DER"))
}

#[derive(Default)]
struct Pkcs12Parts {
    keys: Vec<Vec<u8>>,
    certificates: Vec<Vec<u8>>,
}

impl Pkcs12 {
    /// Opens a key store with its password: the MAC is checked, then every bag read. A store
    /// must hold exactly one private key.
    pub fn from_der(der: &[u8], password: &str) -> Result<Pkcs12, KeyError> {
        let (pfx, _) = expect(der, 0x30, "not a PKCS#12 key store")?;
        let (version, rest) = expect(pfx, 0x02, "a key store without its version")?;
        if small_integer(version)? != 3 {
            return Err(bad("only PKCS#12 version 3 key stores are read"));
        }
        let (auth_safe, mac_data) = expect(rest, 0x30, "a key store without its contents")?;
        let (content_type, rest) = expect(auth_safe, 0x06, "contents without their type")?;
        if content_type != OID_DATA {
            return Err(bad("public-key-protected key stores are not read"));
        }
        let (explicit, _) = expect(rest, 0xa0, "contents without their data")?;
        let (octets, _) = expect(explicit, 0x04, "contents that are not an OCTET STRING")?;
        if mac_data.is_empty() {
            return Err(bad("the key store has no MAC"));
        }
        check_mac(mac_data, octets, password)?;
        let (mut infos, _) = expect(octets, 0x30, "malformed AuthenticatedSafe")?;
        let mut found = Pkcs12Parts::default();
        while !infos.is_empty() {
            let (info, rest) = expect(infos, 0x30, "malformed ContentInfo")?;
            infos = rest;
            let (kind, rest) = expect(info, 0x06, "a ContentInfo without its type")?;
            let (explicit, _) = expect(rest, 0xa0, "a ContentInfo without its content")?;
            if kind == OID_DATA {
                let (contents, _) = expect(explicit, 0x04, "data that is not an OCTET STRING")?;
                read_bags(contents, password, &mut found)?;
            } else if kind == OID_ENCRYPTED_DATA {
                let (encrypted, _) = expect(explicit, 0x30, "malformed EncryptedData")?;
                let (_, rest) = expect(encrypted, 0x02, "EncryptedData without its version")?;
                let (content, _) = expect(rest, 0x30, "EncryptedData without its content")?;
                let (_, rest) = expect(content, 0x06, "encrypted content without its type")?;
                let (algorithm, rest) = expect(rest, 0x30, "encrypted content without a scheme")?;
                let (data, _) = expect(rest, 0x80, "encrypted content without its data")?;
                let plain = decrypt(algorithm, data, password)?;
                read_bags(&plain, password, &mut found)?;
            } else {
                return Err(bad("public-key-encrypted contents are not read"));
            }
        }
        let mut keys = found.keys.into_iter();
        match (keys.next(), keys.next()) {
            (Some(key), None) => Ok(Pkcs12 {
                private_key_pkcs8: key,
                certificates: found.certificates,
            }),
            (None, _) => Err(bad("the key store holds no private key")),
            (Some(_), Some(_)) => Err(bad("the key store holds more than one private key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PFX_3DES: &[u8] = include_bytes!("../../../fixtures/unionpay/test-merchant.pfx");
    const PFX_AES: &[u8] = include_bytes!("../../../fixtures/unionpay/test-merchant-aes.pfx");
    const CERT: &str = include_str!("../../../fixtures/unionpay/test-merchant-cert.pem");

    /// Both stores (3DES with a SHA-1 MAC, as UnionPay ships it; PBES2/AES-256 with a
    /// SHA-256 MAC, as OpenSSL 3 writes it) open to the merchant's key and certificate: the
    /// MAC checks the appendix-B derivation, the decryption both schemes.
    #[test]
    fn the_test_merchant_store_opens_in_both_schemes() {
        let (_, expected) = crate::crypto::decode_pem(CERT).unwrap_or_default();
        for pfx in [PFX_3DES, PFX_AES] {
            let store = Pkcs12::from_der(pfx, "000000").map_err(|e| e.to_string());
            let store = store.unwrap_or_else(|e| unreachable!("{e}"));
            assert!(store.certificates.contains(&expected));
            let signer = crate::crypto::RsaSigner::from_pkcs8_der(&store.private_key_pkcs8);
            let signer = signer
                .map_err(|e| e.to_string())
                .unwrap_or_else(|e| unreachable!("{e}"));
            let certificate = crate::x509::X509::from_der(&expected).map_err(|e| e.to_string());
            let certificate = certificate.unwrap_or_else(|e| unreachable!("{e}"));
            let signature = signer.sign_base64(b"probe").unwrap_or_default();
            assert!(certificate.verifier().verify_base64(b"probe", &signature));
            // A wrong password fails the MAC, before anything is decrypted.
            let wrong = Pkcs12::from_der(pfx, "000001")
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(wrong.is_err_and(|e| e.contains("MAC")));
        }
    }

    #[test]
    fn what_is_not_a_key_store_is_refused() {
        assert_eq!(bmp_password("ab"), [0, 0x61, 0, 0x62, 0, 0]);
        assert!(Pkcs12::from_der(b"", "x").is_err());
        assert!(Pkcs12::from_der(&[0x30, 0x03, 0x02, 0x01, 0x02], "x").is_err());
        assert!(Pkcs12::from_der(&[0x04, 0x00], "x").is_err());
        // A store cut short anywhere is refused, never a panic.
        for end in (0..PFX_3DES.len()).step_by(97) {
            assert!(Pkcs12::from_der(PFX_3DES.get(..end).unwrap_or_default(), "000000").is_err());
        }
    }
}
