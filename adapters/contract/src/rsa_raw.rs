//! The RSA public-key operation on its own, for the one provider that signs without a
//! `DigestInfo`: JD Pay's V2.0 "sign" is the private-key operation over a PKCS#1 type-1 block
//! (`00 01 FF…FF 00 ‖ payload`) whose payload is the ASCII hex of a SHA-256, not the
//! `SHA256withRSA` encoding `ring` verifies. Verifying it is the public operation
//! `s^e mod n` and a strict read of the block, which needs no secret: `num-bigint` (the
//! rust-num project's) does the arithmetic, and nothing here touches a private key.

use num_bigint::BigUint;

use crate::crypto::{KeyError, der_element, spki_rsa_public_key};

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
        use base64::Engine;
        let der = if text.contains("-----BEGIN") {
            crate::crypto::decode_pem(text)?.1
        } else {
            let compact: String = text.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| KeyError::Rejected("public key is not base64"))?
        };
        TypeOneVerifier::from_spki_der(&der)
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
