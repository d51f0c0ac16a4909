//! RSA over PKCS#1 type-1 blocks without a `DigestInfo`, for the one provider that signs so:
//! JD Pay's V2.0 "sign" is the private-key operation over `00 01 FF…FF 00 ‖ payload`, the
//! payload the ASCII hex of a SHA-256, not the `SHA256withRSA` encoding `ring` makes (and
//! `ring` refuses JD's 1024-bit keys). Verifying is the public operation `s^e mod n` and a
//! strict read of the block, which needs no secret: `num-bigint` (the rust-num project's)
//! does that arithmetic. Signing ([`TypeOneSigner`]) is the private operation on RustCrypto's
//! constant-time `crypto-bigint`, not the `rsa` crate (RUSTSEC-2023-0071: its big integers
//! leak timing).

use num_bigint::BigUint;

use crate::crypto::{KeyError, der_element, spki_rsa_public_key};

/// The DER of a key written as PEM or as bare base64 (how JD hands its keys out).
fn key_der(text: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    if text.contains("-----BEGIN") {
        return Ok(crate::crypto::decode_pem(text)?.1);
    }
    let compact: String = text.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| KeyError::Rejected("key is not base64"))
}

/// Shortest padding a type-1 block may carry (PKCS#1 v1.5: at least eight `FF` bytes).
const MIN_PADDING: usize = 8;

/// An RSA public key, for reading PKCS#1 type-1 blocks.
#[derive(Clone, Debug)]
pub struct TypeOneVerifier {
    n: BigUint,
    e: BigUint,
    /// The modulus's length in bytes.
    k: usize,
}

impl TypeOneVerifier {
    /// Loads a `SubjectPublicKeyInfo` (DER) of an rsaEncryption key.
    pub fn from_spki_der(spki: &[u8]) -> Result<TypeOneVerifier, KeyError> {
        let pkcs1 = spki_rsa_public_key(spki)?;
        let (tag, fields, _) = der_element(&pkcs1)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("RSAPublicKey is not a SEQUENCE"));
        }
        let (tag, n, rest) = der_element(fields)?;
        let (tag_e, e, _) = der_element(rest)?;
        if tag != 0x02 || tag_e != 0x02 {
            return Err(KeyError::Rejected("RSAPublicKey fields are not INTEGERs"));
        }
        let n = BigUint::from_bytes_be(n);
        let e = BigUint::from_bytes_be(e);
        let bits = n.bits();
        if !(1024..=4096).contains(&bits) || e < BigUint::from(3_u32) || !e.bit(0) {
            return Err(KeyError::Rejected("not a usable RSA public key"));
        }
        let k = usize::try_from(bits.div_ceil(8))
            .map_err(|_| KeyError::Rejected("modulus too large"))?;
        Ok(TypeOneVerifier { n, e, k })
    }

    /// Loads the bare base64 of a `SubjectPublicKeyInfo` (how JD hands its key out), or PEM.
    pub fn from_base64_or_pem(text: &str) -> Result<TypeOneVerifier, KeyError> {
        TypeOneVerifier::from_spki_der(&key_der(text)?)
    }

    /// The payload of the type-1 block `signature` opens to (`00 01 FF…FF 00 ‖ payload`), or
    /// `None` when the signature is not the modulus's length, not below it, or does not open
    /// to such a block.
    pub fn recover(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.k {
            return None;
        }
        let s = BigUint::from_bytes_be(signature);
        if s >= self.n {
            return None;
        }
        let m = s.modpow(&self.e, &self.n).to_bytes_be();
        // `to_bytes_be` drops leading zeros: the block's `00` is gone, `01` leads.
        if m.len() != self.k - 1 || m.first() != Some(&1) {
            return None;
        }
        let rest = m.get(1..)?;
        let padding = rest.iter().take_while(|&&b| b == 0xff).count();
        if padding < MIN_PADDING || rest.get(padding) != Some(&0) {
            return None;
        }
        rest.get(padding + 1..).map(<[u8]>::to_vec)
    }

    /// True when `signature` opens to exactly `payload`.
    pub fn verify(&self, payload: &[u8], signature: &[u8]) -> bool {
        self.recover(signature).is_some_and(|p| p == payload)
    }
}

/// An RSA private key making PKCS#1 type-1 blocks' signatures (JD Pay's sign), for keys of
/// 1024 bits and up (JD issues 1024-bit keys, which `ring` refuses).
///
/// The private operation runs on RustCrypto's `crypto-bigint`, whose arithmetic is constant
/// time: the CRT halves are exponentiations in Montgomery form whose time does not depend on
/// the exponent, the message is blinded by a random `r^e` first and unblinded after, and the
/// result is checked with the public key before it leaves (a faulty half would otherwise give
/// away a factor). It never decrypts, so there is no padding oracle to guard.
pub struct TypeOneSigner {
    public: TypeOneVerifier,
    n: Odd<BoxedUint>,
    e: BoxedUint,
    p: Odd<BoxedUint>,
    q: Odd<BoxedUint>,
    dp: BoxedUint,
    dq: BoxedUint,
    qinv: BoxedUint,
    n_params: BoxedMontyParams,
    p_params: BoxedMontyParams,
    q_params: BoxedMontyParams,
    random: ring::rand::SystemRandom,
}

impl std::fmt::Debug for TypeOneSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypeOneSigner(…)")
    }
}

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, NonZero, Odd, Resize};

/// Bits of precision for an integer of `bytes` bytes (whole 64-bit limbs).
fn precision(bytes: usize) -> Result<u32, KeyError> {
    u32::try_from(bytes.div_ceil(8) * 64).map_err(|_| KeyError::Rejected("integer too large"))
}

/// A DER INTEGER's magnitude without its sign byte.
fn magnitude(bytes: &[u8]) -> &[u8] {
    let leading = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.get(leading..).unwrap_or_default()
}

fn uint(bytes: &[u8], bits: u32) -> Result<BoxedUint, KeyError> {
    BoxedUint::from_be_slice(magnitude(bytes), bits)
        .map_err(|_| KeyError::Rejected("integer does not fit its modulus"))
}

fn odd(value: BoxedUint) -> Result<Odd<BoxedUint>, KeyError> {
    Option::from(Odd::new(value)).ok_or(KeyError::Rejected("RSA modulus or prime is even"))
}

impl TypeOneSigner {
    /// Loads a PKCS#8 `PrivateKeyInfo` or a PKCS#1 `RSAPrivateKey` (DER).
    pub fn from_der(der: &[u8]) -> Result<TypeOneSigner, KeyError> {
        let (tag, body, _) = der_element(der)?;
        if tag != 0x30 {
            return Err(KeyError::Rejected("private key is not a SEQUENCE"));
        }
        let (_, _version, rest) = der_element(body)?;
        // PKCS#8: an AlgorithmIdentifier follows, then the RSAPrivateKey in an OCTET STRING.
        let rsa = match der_element(rest)? {
            (0x30, _, rest) => {
                let (tag, inner, _) = der_element(rest)?;
                if tag != 0x04 {
                    return Err(KeyError::Rejected("PKCS#8 key without an OCTET STRING"));
                }
                let (tag, body, _) = der_element(inner)?;
                if tag != 0x30 {
                    return Err(KeyError::Rejected("RSAPrivateKey is not a SEQUENCE"));
                }
                let (_, _, rest) = der_element(body)?;
                rest
            }
            _ => rest,
        };
        let mut fields = Vec::with_capacity(8);
        let mut rest = rsa;
        for _ in 0..8 {
            let (tag, value, next) = der_element(rest)?;
            if tag != 0x02 {
                return Err(KeyError::Rejected("RSAPrivateKey field is not an INTEGER"));
            }
            fields.push(value);
            rest = next;
        }
        let [n, e, _d, p, q, dp, dq, qinv] = fields[..] else {
            return Err(KeyError::Rejected("RSAPrivateKey lacks a field"));
        };
        let k = magnitude(n).len();
        let n_bits = precision(k)?;
        let p_bits = precision(magnitude(p).len())?;
        let q_bits = precision(magnitude(q).len())?;
        if p_bits > n_bits || q_bits > n_bits {
            return Err(KeyError::Rejected("RSA primes longer than the modulus"));
        }
        let public_der = rsa_public_key_spki(n, e);
        let public = TypeOneVerifier::from_spki_der(&public_der)?;
        let n = odd(uint(n, n_bits)?)?;
        let p = odd(uint(p, p_bits)?)?;
        let q = odd(uint(q, q_bits)?)?;
        let signer = TypeOneSigner {
            public,
            e: uint(e, n_bits)?,
            dp: uint(dp, p_bits)?,
            dq: uint(dq, q_bits)?,
            qinv: uint(qinv, p_bits)?,
            n_params: BoxedMontyParams::new(n.clone()),
            p_params: BoxedMontyParams::new(p.clone()),
            q_params: BoxedMontyParams::new(q.clone()),
            n,
            p,
            q,
            random: ring::rand::SystemRandom::new(),
        };
        // A key whose parts do not belong together fails its own check here, not later.
        signer
            .sign(b"moongate key check")
            .map_err(|_| KeyError::Rejected("the RSA key's parts do not belong together"))?;
        Ok(signer)
    }

    /// Loads the bare base64 of a key (how JD hands keys out), or PEM.
    pub fn from_base64_or_pem(text: &str) -> Result<TypeOneSigner, KeyError> {
        TypeOneSigner::from_der(&key_der(text)?)
    }

    /// The public half.
    pub fn verifier(&self) -> &TypeOneVerifier {
        &self.public
    }

    /// The signature of the type-1 block `00 01 FF…FF 00 ‖ payload` (the modulus's length).
    pub fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        use ring::rand::SecureRandom;
        let k = self.public.k;
        let padding = k
            .checked_sub(3 + payload.len())
            .filter(|&p| p >= MIN_PADDING)
            .ok_or(KeyError::Rejected("payload too long for the key"))?;
        let mut block = Vec::with_capacity(k);
        block.extend_from_slice(&[0, 1]);
        block.resize(2 + padding, 0xff);
        block.push(0);
        block.extend_from_slice(payload);
        let bits = self.n.bits_precision();
        let message = BoxedUint::from_be_slice(&block, bits)
            .map_err(|_| KeyError::Rejected("block does not fit the modulus"))?;
        // Blinding: sign m·r^e, then take r off.
        let mut seed = vec![0_u8; k + 16];
        self.random
            .fill(&mut seed)
            .map_err(|_| KeyError::Rejected("no randomness"))?;
        let n_nonzero: &NonZero<BoxedUint> = AsRef::<NonZero<BoxedUint>>::as_ref(&self.n);
        let r = BoxedUint::from_be_slice(&seed, precision(seed.len())?)
            .map_err(|_| KeyError::Rejected("randomness"))?
            .rem(n_nonzero);
        let r = BoxedMontyForm::new(r, &self.n_params);
        let r_inverse = Option::from(r.invert()).ok_or(KeyError::Rejected("blinding"))?;
        let blinded = BoxedMontyForm::new(message, &self.n_params)
            .mul(&r.pow(&self.e))
            .retrieve();
        let signed = self.crt(&blinded, bits)?;
        let signature = BoxedMontyForm::new(signed, &self.n_params)
            .mul(&r_inverse)
            .retrieve();
        let mut out = vec![0_u8; k];
        let bytes = signature.to_be_bytes();
        let skip = bytes.len().saturating_sub(k);
        let tail = bytes.get(skip..).unwrap_or_default();
        let at = k.saturating_sub(tail.len());
        out.get_mut(at..)
            .ok_or(KeyError::Rejected("signature length"))?
            .copy_from_slice(tail);
        // A fault in either half would give away a factor: check before it leaves.
        if self.public.recover(&out).as_deref() != Some(payload) {
            return Err(KeyError::Rejected("signature failed its own check"));
        }
        Ok(out)
    }

    /// `c^d mod n` by the Chinese remainder theorem (Garner's recombination).
    fn crt(&self, c: &BoxedUint, bits: u32) -> Result<BoxedUint, KeyError> {
        let p_nonzero: &NonZero<BoxedUint> = AsRef::<NonZero<BoxedUint>>::as_ref(&self.p);
        let q_nonzero: &NonZero<BoxedUint> = AsRef::<NonZero<BoxedUint>>::as_ref(&self.q);
        let m1 = BoxedMontyForm::new(c.rem(p_nonzero), &self.p_params)
            .pow(&self.dp)
            .retrieve();
        let m2 = BoxedMontyForm::new(c.rem(q_nonzero), &self.q_params)
            .pow(&self.dq)
            .retrieve();
        // h = qinv · (m1 − m2) mod p, with m2 reduced mod p first (q may exceed p).
        let m2_mod_p = m2.clone().resize(bits).rem(p_nonzero);
        let h = self
            .qinv
            .mul_mod(&m1.sub_mod(&m2_mod_p, p_nonzero), p_nonzero);
        // m = m2 + h·q < n.
        let m = h
            .resize(bits)
            .wrapping_mul(self.q.as_ref())
            .wrapping_add(m2.resize(bits));
        Ok(m)
    }
}

/// The `SubjectPublicKeyInfo` of `n` and `e` (DER INTEGER contents, as read).
fn rsa_public_key_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let used: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
            out.push(0x80 | used.len() as u8);
            out.extend_from_slice(&used);
        }
        out.extend_from_slice(body);
        out
    }
    let mut fields = der(0x02, n);
    fields.extend(der(0x02, e));
    let rsa = der(0x30, &fields);
    let mut bits = vec![0];
    bits.extend_from_slice(&rsa);
    let mut body = der(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}
