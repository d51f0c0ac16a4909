//! Payment codes through v2 `/pay/micropay`: the flat XML request with its HMAC-SHA256 sign, and its answer.

use super::*;

impl WechatPayAdapter {
    pub(crate) fn micropay_request(
        &self,
        cx: &CallContext,
        req: &CreatePayment,
    ) -> Result<HttpRequest, AdapterError> {
        let key = self.api_v2_key.as_ref().ok_or(AdapterError::Unsupported {
            op: Operation::Create,
        })?;
        let code = req
            .payer
            .payment_code
            .as_deref()
            .filter(|c| facts::PAYMENT_CODE.matches(c))
            .ok_or_else(|| {
                AdapterError::InvalidRequest("payer.payment_code is not a WeChat Pay code".into())
            })?;
        let mut fields = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            fields.insert(k.to_owned(), v);
        };
        put("appid", self.appid.clone());
        put("mch_id", self.mchid.clone());
        // Partner mode: the provider's `appid`/`mch_id` above, the sub-merchant here.
        if let Some(partner) = &self.partner {
            put("sub_mch_id", partner.sub_mchid.clone());
            if let Some(sub_appid) = &partner.sub_appid {
                put("sub_appid", sub_appid.clone());
            }
        }
        put("nonce_str", cx.nonce.clone());
        put("sign_type", "HMAC-SHA256".to_owned());
        put("body", truncate_bytes(&req.subject, MAX_V2_BODY_BYTES));
        put("out_trade_no", req.provider_order_id.clone());
        put("total_fee", fen(req.amount)?.to_string());
        put("fee_type", "CNY".to_owned());
        put(
            "spbill_create_ip",
            req.payer
                .client_ip
                .clone()
                .unwrap_or_else(|| "127.0.0.1".to_owned()),
        );
        put("auth_code", code.to_owned());
        let sign = v2::hmac_sha256_sign(&fields, key.expose());
        fields.insert("sign".to_owned(), sign);
        let xml = v2::to_xml(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(HttpRequest {
            method: HttpMethod::Post,
            url: format!("{}/pay/micropay", self.base_url),
            headers: vec![(
                "content-type".to_owned(),
                "text/xml; charset=utf-8".to_owned(),
            )],
            body: xml.into_bytes(),
        })
    }

    pub(crate) fn parse_micropay(
        &self,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        if resp.status != 200 {
            return Err(AdapterError::Protocol(format!(
                "HTTP status {}",
                resp.status
            )));
        }
        let key = self.api_v2_key.as_ref().ok_or(AdapterError::Unsupported {
            op: Operation::Create,
        })?;
        let fields = v2::from_xml(&resp.body).map_err(|e| AdapterError::Protocol(e.to_string()))?;
        let get = |name: &str| fields.get(name).map(String::as_str).unwrap_or_default();
        if get("return_code") != "SUCCESS" {
            // A communication-level refusal (bad sign, bad XML): nothing was processed.
            return Err(AdapterError::Rejected {
                code: "FAIL".to_owned(),
                message: get("return_msg").to_owned(),
            });
        }
        if !v2::verify_hmac_sha256(&fields, key.expose()) {
            return Err(AdapterError::Protocol(
                "v2 answer sign does not verify".to_owned(),
            ));
        }
        let other_sub_merchant = self
            .partner
            .as_ref()
            .is_some_and(|p| get("sub_mch_id") != p.sub_mchid);
        if get("mch_id") != self.mchid || get("appid") != self.appid || other_sub_merchant {
            return Err(AdapterError::Protocol(
                "v2 answer for another merchant".to_owned(),
            ));
        }
        if get("result_code") == "SUCCESS" {
            if get("out_trade_no") != req.provider_order_id {
                return Err(AdapterError::Protocol(
                    "out_trade_no echo mismatch".to_owned(),
                ));
            }
            let total: i64 = get("total_fee")
                .parse()
                .map_err(|_| AdapterError::Protocol("total_fee missing".to_owned()))?;
            let transaction_id = get("transaction_id");
            if transaction_id.is_empty() {
                return Err(AdapterError::Protocol("transaction_id missing".to_owned()));
            }
            return Ok(PaymentStatus::Succeeded {
                provider_ref: transaction_id.to_owned(),
                amount: Money::new(total, currency_or_cny(get("fee_type"))?),
                paid_at: parse_compact_beijing(get("time_end")),
            });
        }
        let code = get("err_code").to_owned();
        let message = get("err_code_des").to_owned();
        match code.as_str() {
            // The shopper must confirm (password): follow with queries.
            "USERPAYING" => Ok(PaymentStatus::AwaitingPayment {
                next_action: Some(NextAction::AwaitShopperConfirmation),
            }),
            // Outcome open: query.
            "SYSTEMERROR" | "BANKERROR" | "ORDERPAID" | "OUT_TRADE_NO_USED" | "" => {
                Err(AdapterError::Indeterminate { code, message })
            }
            // Refused before anything happened.
            "PARAM_ERROR"
            | "NOAUTH"
            | "XML_FORMAT_ERROR"
            | "REQUIRE_POST_METHOD"
            | "SIGNERROR"
            | "LACK_PARAMS"
            | "NOT_UTF8"
            | "APPID_NOT_EXIST"
            | "MCHID_NOT_EXIST"
            | "APPID_MCHID_NOT_MATCH" => Err(AdapterError::Rejected { code, message }),
            // The shopper's code or funds: a definite failure.
            "AUTHCODEEXPIRE" | "NOTENOUGH" | "NOTSUPORTCARD" | "AUTH_CODE_ERROR"
            | "AUTH_CODE_INVALID" | "BUYER_MISMATCH" | "TRADE_ERROR" | "ORDERCLOSED"
            | "ORDERREVERSED" | "INVALID_REQUEST" => Ok(PaymentStatus::Failed { code, message }),
            _ => Err(AdapterError::Indeterminate { code, message }),
        }
    }
}
