//! Platform certificates: `GET /v3/certificates`, decrypted with the APIv3 key and checked.

use super::*;

impl WechatPayAdapter {
    /// Renders `GET /v3/certificates`: how certificate-mode merchants obtain the platform
    /// certificates (WeChat Pay hands them out only through this API).
    pub fn prepare_certificates(&self, cx: &CallContext) -> Result<HttpRequest, AdapterError> {
        self.v3_request(cx, HttpMethod::Get, "/v3/certificates", None)
    }

    /// Reads the `/v3/certificates` answer: each PEM is decrypted with the APIv3 key (so it came
    /// from someone holding our key), parsed, its serial checked, and the answer's signature
    /// verified with the keys already configured or, on first download, with the certificate
    /// the answer names in `Wechatpay-Serial`.
    pub fn parse_certificates(
        &self,
        resp: &HttpResponse,
    ) -> Result<Vec<PlatformCertificate>, AdapterError> {
        if resp.status != 200 {
            let error: wire::ErrorBody = serde_json::from_slice(&resp.body).unwrap_or_default();
            return Err(ApiFailure {
                status: resp.status,
                code: error.code,
                message: error.message,
            }
            .into_error());
        }
        let list: wire::CertificateList = Self::decode(&resp.body)?;
        let mut keys = PlatformKeys::clone(&self.platform);
        let mut downloaded = Vec::new();
        for item in list.data {
            let encrypted = &item.encrypt_certificate;
            if encrypted.algorithm != "AEAD_AES_256_GCM" {
                return Err(AdapterError::Protocol(format!(
                    "unsupported algorithm {}",
                    encrypted.algorithm
                )));
            }
            let pem = aead::decrypt(
                self.api_v3_key.expose(),
                &encrypted.nonce,
                &encrypted.associated_data,
                &encrypted.ciphertext,
            )
            .map_err(|_| AdapterError::Protocol("certificate does not decrypt".to_owned()))?;
            let pem = String::from_utf8(pem)
                .map_err(|_| AdapterError::Protocol("certificate is not UTF-8".to_owned()))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| AdapterError::Protocol(format!("certificate: {e}")))?;
            if !certificate.serial_hex.eq_ignore_ascii_case(&item.serial_no) {
                return Err(AdapterError::Protocol(
                    "certificate serial differs from serial_no".to_owned(),
                ));
            }
            keys = keys.with_certificate(&certificate.serial_hex, certificate.verifier);
            downloaded.push(PlatformCertificate {
                serial_no: certificate.serial_hex,
                pem,
                expire_time: item.expire_time,
            });
        }
        keys.verify(
            |name| resp.header(name).map(str::to_owned),
            &resp.body,
            resp.received_at,
        )
        .map_err(|e| AdapterError::Protocol(format!("response signature: {e}")))?;
        Ok(downloaded)
    }
}
