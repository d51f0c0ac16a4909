//! WeChat Pay sandbox: v2 `micropay` (payment codes), flat XML with its HMAC-SHA256 sign.

use super::*;

/// v2 `/pay/micropay`: the cashier scanned a WeChat payment code.
///
/// Sandbox choices: a code ending in `0000` needs the shopper's password (`USERPAYING`; pay
/// it with `/sandbox/pay`), one ending in `9999` has no funds (`NOTENOUGH`), any other valid
/// code pays at once. Only `HMAC-SHA256` signs are accepted.
pub(super) async fn micropay(State(sb): State<Shared>, body: Bytes) -> Response {
    let xml = |fields: &BTreeMap<String, String>| {
        let mut response = (
            StatusCode::OK,
            sign::v2_xml(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=utf-8"),
        );
        response
    };
    let comm_fail = |message: &str| {
        let mut fields = BTreeMap::new();
        fields.insert("return_code".to_owned(), "FAIL".to_owned());
        fields.insert("return_msg".to_owned(), message.to_owned());
        xml(&fields)
    };
    sb.lock().calls += 1;
    let Ok(fields) = sign::parse_v2_xml(&body).ok_or(()) else {
        return comm_fail("XML格式错误");
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let Some(merchant) = sb.merchants.get(get("mch_id")) else {
        return comm_fail("商户号mch_id与appid不匹配");
    };
    let Some(key) = merchant.settings.api_v2_key.as_deref() else {
        return comm_fail("商户未开通付款码支付");
    };
    for name in [
        "appid",
        "mch_id",
        "nonce_str",
        "sign",
        "body",
        "out_trade_no",
        "total_fee",
        "spbill_create_ip",
        "auth_code",
    ] {
        if get(name).is_empty() {
            return comm_fail(&format!("缺少参数{name}"));
        }
    }
    if get("sign_type") != "HMAC-SHA256" || !sign::v2_sign_matches(&fields, key) {
        return comm_fail("签名错误");
    }
    if !merchant.settings.appids.iter().any(|a| a == get("appid")) {
        return comm_fail("appid和mch_id不匹配");
    }
    // A service provider names its sub-merchant (`sub_mch_id`, optional `sub_appid`).
    let sub_mchid = Some(get("sub_mch_id")).filter(|s| !s.is_empty());
    let owner = match merchant.owner_of(sub_mchid) {
        Ok(owner) => owner.to_owned(),
        Err(refusal) => return comm_fail(refusal.v2_message()),
    };
    let sub_appid = Some(get("sub_appid")).filter(|s| !s.is_empty());
    if let Some(sub_appid) = sub_appid
        && !merchant.has_sub_appid(&owner, sub_appid)
    {
        return comm_fail("sub_appid与sub_mch_id不匹配");
    }
    let now = OffsetDateTime::now_utc();
    let mut reply = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        reply.insert(k.to_owned(), v);
    };
    put("return_code", "SUCCESS".into());
    put("return_msg", "OK".into());
    put("appid", get("appid").into());
    put("mch_id", get("mch_id").into());
    if let Some(sub_mchid) = sub_mchid {
        put("sub_mch_id", sub_mchid.into());
    }
    if let Some(sub_appid) = sub_appid {
        put("sub_appid", sub_appid.into());
    }
    put("nonce_str", random_alnum(16));
    let outcome: Result<Order, (&str, &str)> = (|| {
        let total: i64 = get("total_fee")
            .parse()
            .ok()
            .filter(|t| *t >= 1)
            .ok_or(("PARAM_ERROR", "total_fee 须为正整数"))?;
        if !valid_order_no(get("out_trade_no")) {
            return Err(("PARAM_ERROR", "out_trade_no 格式错误"));
        }
        let code = get("auth_code");
        if !is_wechat_code(code) {
            return Err(("AUTH_CODE_INVALID", "付款码无效，请重新扫码"));
        }
        let mut inner = sb.lock();
        inner.counter += 1;
        let number = inner.counter;
        let key = (owner.clone(), get("out_trade_no").to_owned());
        if let Some(existing) = inner.orders.get(&key) {
            return match existing.state {
                TradeState::Success | TradeState::Refund => Err(("ORDERPAID", "订单已支付")),
                TradeState::Closed => Err(("ORDERCLOSED", "订单已关闭")),
                TradeState::UserPaying => Err(("USERPAYING", "需要用户输入支付密码")),
                TradeState::PayError | TradeState::NotPay => {
                    Err(("OUT_TRADE_NO_USED", "商户订单号重复"))
                }
            };
        }
        let state = if code.ends_with("0000") {
            TradeState::UserPaying
        } else if code.ends_with("9999") {
            TradeState::PayError
        } else {
            TradeState::Success
        };
        let order = Order {
            mchid: get("mch_id").to_owned(),
            appid: get("appid").to_owned(),
            sub: sub_mchid.map(|sub_mchid| OrderSub {
                sub_mchid: sub_mchid.to_owned(),
                sub_appid: sub_appid.map(str::to_owned),
                sub_openid: sub_appid.is_some(),
            }),
            out_trade_no: key.1.clone(),
            trade_type: "MICROPAY",
            description: get("body").to_owned(),
            total,
            notify_url: None,
            expires_at: now + time::Duration::minutes(5),
            state,
            transaction_id: (state == TradeState::Success)
                .then(|| format!("4200{}{:014}", now.unix_timestamp(), number)),
            paid_at: (state == TradeState::Success).then_some(now),
            openid: format!("oSandbox{}", random_alnum(20)),
            prepay_id: String::new(),
            fingerprint: String::new(),
            refunds: Vec::new(),
        };
        inner.orders.insert(key, order.clone());
        match state {
            TradeState::UserPaying => Err(("USERPAYING", "需要用户输入支付密码")),
            TradeState::PayError => Err(("NOTENOUGH", "余额不足")),
            _ => Ok(order),
        }
    })();
    match outcome {
        Ok(order) => {
            put("result_code", "SUCCESS".into());
            put("openid", order.openid.clone());
            put("is_subscribe", "N".into());
            put("trade_type", "MICROPAY".into());
            put("bank_type", "OTHERS".into());
            put("fee_type", "CNY".into());
            put("total_fee", order.total.to_string());
            put("cash_fee", order.total.to_string());
            put(
                "transaction_id",
                order.transaction_id.clone().unwrap_or_default(),
            );
            put("out_trade_no", order.out_trade_no.clone());
            let beijing =
                now.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC));
            put(
                "time_end",
                beijing
                    .format(time::macros::format_description!(
                        "[year][month][day][hour][minute][second]"
                    ))
                    .unwrap_or_default(),
            );
        }
        Err((code, message)) => {
            put("result_code", "FAIL".into());
            put("err_code", code.into());
            put("err_code_des", message.into());
        }
    }
    let sign = sign::v2_sign(&reply, key);
    reply.insert("sign".into(), sign);
    xml(&reply)
}
