//! JD's 3DES envelope: `DESede/ECB/NoPadding` with a 24-byte key (the merchant's `desKey`,
//! base64), over a 4-byte big-endian length, the UTF-8 text and zero bytes up to a multiple of
//! eight; the ciphertext as lowercase hex. Inside an XML message the hex is base64-encoded
//! once more (`<encrypt>`).

use base64::Engine;
use des::TdesEde3;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

/// Why an envelope did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The `desKey` is not base64 of 24 bytes.
    #[error("desKey must be base64 of 24 bytes")]
    Key,
    /// The text is not base64, not hex, or not whole 8-byte blocks.
    #[error("not a JD envelope: {0}")]
    Encoding(&'static str),
    /// The length prefix or the zero padding is wrong (a wrong key, or a forged text).
    #[error("the envelope's length or padding does not hold")]
    Framing,
    /// The text inside is not UTF-8.
    #[error("the envelope's text is not UTF-8")]
    Utf8,
}

/// A merchant's `desKey`.
#[derive(Clone)]
pub struct DesKey(TdesEde3);

impl std::fmt::Debug for DesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DesKey(…)")
    }
}

impl DesKey {
    /// Reads the base64 `desKey` JD issues.
    pub fn from_base64(text: &str) -> Result<DesKey, EnvelopeError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| EnvelopeError::Key)?;
        TdesEde3::new_from_slice(&bytes)
            .map(DesKey)
            .map_err(|_| EnvelopeError::Key)
    }

    /// Encrypts `text` to JD's lowercase hex.
    pub fn seal_hex(&self, text: &str) -> Result<String, EnvelopeError> {
        let length = u32::try_from(text.len()).map_err(|_| EnvelopeError::Framing)?;
        let mut data = Vec::with_capacity(text.len() + 12);
        data.extend_from_slice(&length.to_be_bytes());
        data.extend_from_slice(text.as_bytes());
        data.resize(data.len().div_ceil(8) * 8, 0);
        for block in data.chunks_exact_mut(8) {
            self.0.encrypt_block(GenericArray::from_mut_slice(block));
        }
        Ok(hex::encode(data))
    }

    /// Decrypts JD's hex, checking the length prefix and that every padding byte is zero.
    pub fn open_hex(&self, hex_text: &str) -> Result<String, EnvelopeError> {
        let mut data =
            hex::decode(hex_text.trim()).map_err(|_| EnvelopeError::Encoding("not hex"))?;
        if data.is_empty() || data.len() % 8 != 0 {
            return Err(EnvelopeError::Encoding("not whole 8-byte blocks"));
        }
        for block in data.chunks_exact_mut(8) {
            self.0.decrypt_block(GenericArray::from_mut_slice(block));
        }
        let (prefix, rest) = data.split_at(4);
        let mut length = [0_u8; 4];
        length.copy_from_slice(prefix);
        let length =
            usize::try_from(u32::from_be_bytes(length)).map_err(|_| EnvelopeError::Framing)?;
        // The padding is what the length leaves: fewer than eight bytes, all zero.
        let padding = rest
            .len()
            .checked_sub(length)
            .ok_or(EnvelopeError::Framing)?;
        if padding >= 8
            || rest
                .get(length..)
                .is_some_and(|p| p.iter().any(|&b| b != 0))
        {
            return Err(EnvelopeError::Framing);
        }
        let text = rest.get(..length).ok_or(EnvelopeError::Framing)?;
        String::from_utf8(text.to_vec()).map_err(|_| EnvelopeError::Utf8)
    }

    /// Encrypts `text` to the `<encrypt>` value: base64 of the hex.
    pub fn seal(&self, text: &str) -> Result<String, EnvelopeError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.seal_hex(text)?))
    }

    /// Opens an `<encrypt>` value.
    pub fn open(&self, encrypt: &str) -> Result<String, EnvelopeError> {
        let compact: String = encrypt.split_whitespace().collect();
        let hex_bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| EnvelopeError::Encoding("not base64"))?;
        let hex_text =
            String::from_utf8(hex_bytes).map_err(|_| EnvelopeError::Encoding("not hex"))?;
        self.open_hex(&hex_text)
    }
}
