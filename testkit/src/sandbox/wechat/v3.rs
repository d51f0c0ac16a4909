//! WeChat Pay sandbox: the v3 API (authentication, then orders, refunds, certificates).

use super::*;

/// Every v3 call: fault injection, authentication, dispatch, signed answer.
pub(super) async fn v3_entry(
    State(sb): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = sb.lock();
        inner.calls += 1;
        inner.fault.take()
    };
    let corrupt = fault.mode == FaultMode::BadSignature;
    with_faults(fault, v3_handle(sb, method, uri, headers, body, corrupt)).await
}

pub(super) async fn v3_handle(
    sb: Shared,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    corrupt: bool,
) -> Response {
    let merchant = match sb.authenticate(&method, &uri, &headers, &body) {
        Ok(merchant) => merchant,
        Err((mode, reply)) => return sb.respond(mode, reply, corrupt),
    };
    let mode = merchant.settings.key_mode;
    if uri.path() == "/v3/billdownload/file" {
        // The file itself is unsigned; the caller checks the SHA-1 from `tradebill` (B.7).
        return sb.bill_file(&merchant.settings.mchid, uri.query().unwrap_or(""));
    }
    if method == Method::POST {
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
        if !json_body {
            return sb.respond(
                mode,
                param_error("Content-Type 须为 application/json"),
                corrupt,
            );
        }
    }
    let reply = dispatch(&sb, merchant, &method, &uri, &body, headers_host(&headers));
    sb.respond(mode, reply, corrupt)
}

pub(super) fn headers_host(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned()
}

pub(super) fn dispatch(
    sb: &Shared,
    merchant: &Merchant,
    method: &Method,
    uri: &Uri,
    body: &[u8],
    host: String,
) -> Reply {
    let path = uri.path();
    let query: HashMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let json_body = || -> Result<serde_json::Map<String, Value>, Reply> {
        match serde_json::from_slice(body) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(param_error("请求体不是合法的JSON")),
        }
    };
    // Direct merchants' orders under `/v3/pay/transactions/`, service providers' under
    // `/v3/pay/partner/transactions/`.
    let transactions = match path.strip_prefix("/v3/pay/partner/transactions/") {
        Some(rest) => Some((true, rest)),
        None => path
            .strip_prefix("/v3/pay/transactions/")
            .map(|rest| (false, rest)),
    };
    let result = if let Some((partner, product)) = transactions
        && !product.contains('/')
        && *method == Method::POST
    {
        json_body().and_then(|b| create_order(sb, merchant, partner, product, &b, &host))
    } else if let Some((partner, rest)) = transactions
        && let Some(rest) = rest.strip_prefix("out-trade-no/")
    {
        let decoded =
            |s: &str| percent_decode(s).ok_or_else(|| param_error("out_trade_no 格式错误"));
        match rest.strip_suffix("/close") {
            Some(no) if *method == Method::POST => decoded(no).and_then(|no| {
                let body = json_body()?;
                let owner = identify(merchant, partner, |k| str_field(&body, k))?;
                close_order(sb, owner, &no)
            }),
            _ if *method == Method::GET => decoded(rest).and_then(|no| {
                let owner = identify(merchant, partner, |k| query.get(k).map(String::as_str))?;
                query_order(sb, owner, &no)
            }),
            _ => Err(fail(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "资源不存在",
            )),
        }
    } else if path == "/v3/refund/domestic/refunds" && *method == Method::POST {
        json_body().and_then(|b| create_refund(sb, merchant, &b))
    } else if let Some(no) = path.strip_prefix("/v3/refund/domestic/refunds/") {
        percent_decode(no)
            .ok_or_else(|| param_error("out_refund_no 格式错误"))
            .and_then(|no| {
                let owner = merchant.owner(query.get("sub_mchid").map(String::as_str))?;
                query_refund(sb, owner, &no)
            })
    } else if path == "/v3/certificates" {
        certificates(sb, merchant)
    } else if path == "/v3/bill/tradebill" && *method == Method::GET {
        sb.trade_bill(merchant, &query, &host)
    } else {
        Err(fail(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "资源不存在",
        ))
    };
    result.unwrap_or_else(|reply| reply)
}

/// Whose order a query or close names: `mchid` (direct), or `sp_mchid` and `sub_mchid`
/// (partner), the merchant id being the caller's own.
pub(super) fn identify<'m, 'b>(
    merchant: &'m Merchant,
    partner: bool,
    field: impl Fn(&str) -> Option<&'b str>,
) -> Result<&'m str, Reply> {
    let (key, name) = if partner {
        ("sp_mchid", "服务商户号")
    } else {
        ("mchid", "直连商户号")
    };
    match field(key).filter(|v| !v.is_empty()) {
        None => Err(param_error(&format!("{key}（{name}）为必填项"))),
        Some(mchid) if mchid != merchant.settings.mchid => Err(fail(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            &format!("请求方商户号与{key}不一致"),
        )),
        Some(_) if partner => match field("sub_mchid").filter(|v| !v.is_empty()) {
            None => Err(param_error("sub_mchid（子商户号）为必填项")),
            Some(sub) => merchant.owner(Some(sub)),
        },
        Some(_) => merchant.owner(None),
    }
}

pub(super) fn percent_decode(segment: &str) -> Option<String> {
    let decoded: String = form_urlencoded::parse(format!("x={segment}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    Some(decoded)
}

pub(super) fn str_field<'a>(
    map: &'a serde_json::Map<String, Value>,
    path: &str,
) -> Option<&'a str> {
    let mut current: Option<&Value> = None;
    for (index, part) in path.split('.').enumerate() {
        current = if index == 0 {
            map.get(part)
        } else {
            current?.get(part)
        };
    }
    current?.as_str()
}

pub(super) fn required(
    map: &serde_json::Map<String, Value>,
    path: &str,
    name: &str,
) -> Result<String, Reply> {
    str_field(map, path)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            param_error(&format!(
                "输入源“/body/{}”映射到字段“{name}”必填性规则校验失败，此字段为必填项",
                path.replace('.', "/")
            ))
        })
}

pub(super) fn create_order(
    sb: &Shared,
    merchant: &Merchant,
    partner: bool,
    product: &str,
    body: &serde_json::Map<String, Value>,
    host: &str,
) -> Result<Reply, Reply> {
    let trade_type = match product {
        "native" => "NATIVE",
        "jsapi" => "JSAPI",
        "h5" => "MWEB",
        _ => {
            return Err(fail(
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_EXISTS",
                "资源不存在",
            ));
        }
    };
    let (appid, mchid) = if partner {
        (
            required(body, "sp_appid", "服务商应用ID")?,
            required(body, "sp_mchid", "服务商户号")?,
        )
    } else {
        (
            required(body, "appid", "应用ID")?,
            required(body, "mchid", "直连商户号")?,
        )
    };
    let sub_mchid = if partner {
        Some(required(body, "sub_mchid", "子商户号")?)
    } else {
        None
    };
    let description = required(body, "description", "商品描述")?;
    let out_trade_no = required(body, "out_trade_no", "商户订单号")?;
    let notify_url = required(body, "notify_url", "通知地址")?;
    if mchid != merchant.settings.mchid {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            if partner {
                "请求方商户号与sp_mchid不一致"
            } else {
                "请求方商户号与mchid不一致"
            },
        ));
    }
    let owner = merchant.owner(sub_mchid.as_deref())?.to_owned();
    let sub_appid = str_field(body, "sub_appid")
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    if let Some(sub_appid) = &sub_appid
        && !merchant.has_sub_appid(&owner, sub_appid)
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "sub_appid与sub_mchid不匹配",
        ));
    }
    if !merchant.settings.appids.contains(&appid) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        ));
    }
    if description.chars().count() > 127 {
        return Err(param_error("description 超出长度限制"));
    }
    if !valid_order_no(&out_trade_no) {
        return Err(param_error("out_trade_no 格式错误"));
    }
    if !valid_notify_url(&notify_url) || notify_url.contains('?') {
        return Err(param_error("notify_url 须为https地址且不能携带参数"));
    }
    let Some(amount) = body.get("amount").and_then(Value::as_object) else {
        return Err(param_error(
            "输入源“/body/amount”映射到字段“订单金额”必填性规则校验失败，此字段为必填项",
        ));
    };
    let Some(total) = amount
        .get("total")
        .and_then(Value::as_i64)
        .filter(|t| *t >= 1)
    else {
        return Err(param_error("amount.total 须为正整数（单位：分）"));
    };
    if amount
        .get("currency")
        .is_some_and(|c| c.as_str() != Some("CNY"))
    {
        return Err(param_error("amount.currency 仅支持CNY"));
    }
    let now = OffsetDateTime::now_utc();
    let expires_at = match str_field(body, "time_expire") {
        Some(text) => {
            match OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
                Ok(t) if t > now => t,
                _ => return Err(param_error("time_expire 格式错误或已过期")),
            }
        }
        // Unpaid orders close after 7 days.
        None => now + time::Duration::days(7),
    };
    // A sub-merchant's JSAPI payer is one of `sp_openid` and `sub_openid` (which needs
    // `sub_appid`).
    let (openid, sub_openid) = match (trade_type, partner) {
        ("JSAPI", false) => (required(body, "payer.openid", "用户标识")?, false),
        ("JSAPI", true) => match (
            str_field(body, "payer.sp_openid").filter(|o| !o.is_empty()),
            str_field(body, "payer.sub_openid").filter(|o| !o.is_empty()),
        ) {
            (Some(openid), None) => (openid.to_owned(), false),
            (None, Some(_)) if sub_appid.is_none() => {
                return Err(param_error("传入sub_openid时sub_appid为必填项"));
            }
            (None, Some(openid)) => (openid.to_owned(), true),
            _ => {
                return Err(param_error(
                    "payer.sp_openid与payer.sub_openid须且仅须传入一个",
                ));
            }
        },
        _ => (format!("oSandbox{}", random_alnum(20)), false),
    };
    if trade_type == "MWEB" {
        required(body, "scene_info.payer_client_ip", "用户终端IP")?;
        required(body, "scene_info.h5_info.type", "场景类型")?;
    }
    let payer_openid = if trade_type == "JSAPI" {
        openid.as_str()
    } else {
        ""
    };
    let fingerprint = format!(
        "{appid}|{}|{description}|{total}|{trade_type}|{payer_openid}",
        sub_appid.as_deref().unwrap_or_default()
    );
    let sub = sub_mchid.map(|sub_mchid| OrderSub {
        sub_mchid,
        sub_appid,
        sub_openid,
    });
    let mut inner = sb.lock();
    inner.counter += 1;
    let number = inner.counter;
    let key = (owner, out_trade_no.clone());
    let prepay_id = match inner.orders.get(&key) {
        Some(order) if order.state.paid() => {
            return Err(fail(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付"));
        }
        Some(order) if order.state_at(now) == TradeState::Closed => {
            return Err(fail(StatusCode::BAD_REQUEST, "ORDERCLOSED", "该订单已关闭"));
        }
        Some(order) if order.fingerprint != fingerprint => {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "201 商户订单号重复",
            ));
        }
        Some(order) => order.prepay_id.clone(),
        None => {
            let prepay_id = format!("wx{}{:016}", now.unix_timestamp(), number);
            inner.orders.insert(
                key,
                Order {
                    mchid,
                    appid,
                    sub,
                    out_trade_no,
                    trade_type,
                    description,
                    total,
                    notify_url: Some(notify_url),
                    expires_at,
                    state: TradeState::NotPay,
                    transaction_id: None,
                    paid_at: None,
                    openid,
                    prepay_id: prepay_id.clone(),
                    fingerprint,
                    refunds: Vec::new(),
                },
            );
            prepay_id
        }
    };
    Ok(ok(match trade_type {
        "NATIVE" => json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={prepay_id}")}),
        "JSAPI" => json!({"prepay_id": prepay_id}),
        _ => {
            json!({"h5_url": format!("http://{host}/sandbox/h5?prepay_id={prepay_id}&package=2150917749")})
        }
    }))
}

pub(super) fn query_order(sb: &Shared, owner: &str, out_trade_no: &str) -> Result<Reply, Reply> {
    let inner = sb.lock();
    let order = inner
        .orders
        .get(&(owner.to_owned(), out_trade_no.to_owned()))
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
    Ok(ok(order.transaction_json(OffsetDateTime::now_utc())))
}

pub(super) fn close_order(sb: &Shared, owner: &str, out_trade_no: &str) -> Result<Reply, Reply> {
    let mut inner = sb.lock();
    let order = inner
        .orders
        .get_mut(&(owner.to_owned(), out_trade_no.to_owned()))
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"))?;
    match order.state {
        TradeState::Success | TradeState::Refund => {
            Err(fail(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付"))
        }
        // Sandbox choice: closing a closed order answers 204 again.
        TradeState::NotPay | TradeState::Closed | TradeState::UserPaying | TradeState::PayError => {
            order.state = TradeState::Closed;
            Ok(Reply {
                status: StatusCode::NO_CONTENT,
                body: String::new(),
            })
        }
    }
}

pub(super) fn create_refund(
    sb: &Shared,
    merchant: &Merchant,
    body: &serde_json::Map<String, Value>,
) -> Result<Reply, Reply> {
    let owner = merchant.owner(str_field(body, "sub_mchid"))?.to_owned();
    let out_trade_no = required(body, "out_trade_no", "商户订单号")?;
    let out_refund_no = required(body, "out_refund_no", "商户退款单号")?;
    if !valid_order_no(&out_refund_no) {
        return Err(param_error("out_refund_no 格式错误"));
    }
    let notify_url = str_field(body, "notify_url").map(str::to_owned);
    if let Some(url) = &notify_url
        && (!valid_notify_url(url) || url.contains('?'))
    {
        return Err(param_error("notify_url 须为https地址且不能携带参数"));
    }
    let amount = body.get("amount").and_then(Value::as_object);
    let refund_amount = amount.and_then(|a| a.get("refund")).and_then(Value::as_i64);
    let total = amount.and_then(|a| a.get("total")).and_then(Value::as_i64);
    let currency = amount
        .and_then(|a| a.get("currency"))
        .and_then(Value::as_str);
    let (Some(refund_amount), Some(total), Some("CNY")) = (refund_amount, total, currency) else {
        return Err(param_error(
            "amount.refund、amount.total、amount.currency 为必填项",
        ));
    };
    if refund_amount < 1 {
        return Err(param_error("amount.refund 须为正整数（单位：分）"));
    }
    let now = OffsetDateTime::now_utc();
    let (reply, settle) = {
        let mut inner = sb.lock();
        inner.counter += 1;
        let number = inner.counter;
        let order = inner
            .orders
            .get_mut(&(owner.clone(), out_trade_no.clone()))
            .ok_or_else(|| fail(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在"))?;
        if let Some(existing) = order
            .refunds
            .iter()
            .find(|r| r.out_refund_no == out_refund_no)
        {
            if existing.amount != refund_amount {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "退款单号已存在，但退款金额与之前请求不一致",
                ));
            }
            return Ok(ok(order.refund_json(existing)));
        }
        if !order.state.paid() {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单未支付，不能退款",
            ));
        }
        if total != order.total {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "订单金额与原订单不一致",
            ));
        }
        if order.refunded() + refund_amount > order.total {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额",
            ));
        }
        let refund = SandboxRefund {
            out_refund_no: out_refund_no.clone(),
            refund_id: format!("5030{}{:012}", now.unix_timestamp(), number),
            amount: refund_amount,
            status: "PROCESSING",
            notify_url,
            created_at: now,
            success_at: None,
        };
        let reply = ok(order.refund_json(&refund));
        order.refunds.push(refund);
        order.state = TradeState::Refund;
        (reply, (owner, out_trade_no, out_refund_no))
    };
    let sandbox = Arc::clone(sb);
    let wait = Duration::from_millis(REFUND_SETTLE_MS / u64::from(sb.time_divisor));
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        sandbox.settle_refund(&settle.0, &settle.1, &settle.2);
    });
    Ok(reply)
}

pub(super) fn query_refund(sb: &Shared, owner: &str, out_refund_no: &str) -> Result<Reply, Reply> {
    let inner = sb.lock();
    inner
        .orders
        .values()
        .filter(|o| o.owner() == owner)
        .find_map(|o| {
            o.refunds
                .iter()
                .find(|r| r.out_refund_no == out_refund_no)
                .map(|r| ok(o.refund_json(r)))
        })
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"))
}

pub(super) fn certificates(sb: &Shared, merchant: &Merchant) -> Result<Reply, Reply> {
    if merchant.settings.key_mode == KeyMode::PublicKey {
        // Merchants onboarded in public-key mode have no platform certificate (B.3).
        return Err(fail(StatusCode::NOT_FOUND, "NOT_FOUND", "证书不存在"));
    }
    let nonce = random_alnum(12);
    let ciphertext = encrypt_resource(
        merchant.settings.apiv3_key.as_bytes(),
        &nonce,
        "certificate",
        sb.certificate_pem.as_bytes(),
    )
    .ok_or_else(|| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SYSTEM_ERROR",
            "系统错误",
        )
    })?;
    let now = OffsetDateTime::now_utc();
    Ok(ok(json!({"data": [{
        "serial_no": sb.certificate_serial,
        "effective_time": rfc3339_beijing(now - time::Duration::days(1)),
        "expire_time": rfc3339_beijing(now + time::Duration::days(3650)),
        "encrypt_certificate": {"algorithm": "AEAD_AES_256_GCM", "nonce": nonce,
                                "associated_data": "certificate", "ciphertext": ciphertext},
    }]})))
}
