//! Alipay sandbox: `gateway.do`, every method it serves.

use super::*;

pub(super) async fn gateway_do(
    State(sb): State<Shared>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = {
        let mut inner = sb.lock();
        inner.calls += 1;
        inner.fault.take()
    };
    let corrupt = fault.mode == FaultMode::BadSignature;
    with_faults(
        fault,
        gateway_handle(sb, method, query, headers, body, corrupt),
    )
    .await
}

pub(super) async fn gateway_handle(
    sb: Shared,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    corrupt: bool,
) -> Response {
    // 1. Merge query and form parameters, refusing duplicates.
    let mut params: HashMap<String, String> = HashMap::new();
    let mut duplicate = None;
    let mut add = |source: &[u8]| {
        for (key, value) in form_urlencoded::parse(source) {
            if params
                .insert(key.clone().into_owned(), value.into_owned())
                .is_some()
            {
                duplicate = Some(key.into_owned());
            }
        }
    };
    add(query.as_deref().unwrap_or("").as_bytes());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if method == Method::POST && is_form {
        add(&body);
    }
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let signing = sb.signing(get("app_id"));
    let Some(api) = get("method") else {
        return sb.respond(
            &signing,
            "error_response",
            &err(
                "40001",
                "Missing Required Arguments",
                "isv.missing-method",
                "缺少方法名参数",
            ),
            corrupt,
        );
    };
    let api = api.to_owned();
    let known = [
        "alipay.trade.pay",
        "alipay.trade.precreate",
        "alipay.trade.page.pay",
        "alipay.trade.wap.pay",
        "alipay.trade.query",
        "alipay.trade.close",
        "alipay.trade.refund",
        "alipay.trade.fastpay.refund.query",
        "alipay.open.auth.token.app",
        "alipay.system.oauth.token",
        "alipay.trade.create",
        BILL_METHOD,
    ];
    if !known.contains(&api.as_str()) {
        return sb.respond(
            &signing,
            "error_response",
            &err(
                "40002",
                "Invalid Arguments",
                "isv.invalid-method",
                "不存在的方法名",
            ),
            corrupt,
        );
    }
    let name = node_name(&api);
    let reply = |node: Value| sb.respond(&signing, &name, &node, corrupt);
    if let Some(key) = duplicate {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-parameter",
            &format!("参数重复: {key}"),
        ));
    }
    let required = [
        ("app_id", "isv.missing-app-id", "缺少AppID参数"),
        ("sign", "isv.missing-signature", "缺少签名参数"),
        (
            "sign_type",
            "isv.missing-signature-type",
            "缺少签名类型参数",
        ),
        ("timestamp", "isv.missing-timestamp", "缺少时间戳参数"),
        ("version", "isv.missing-version", "缺少版本参数"),
    ];
    for (key, code, message) in required {
        if get(key).is_none() {
            return reply(err("40001", "Missing Required Arguments", code, message));
        }
    }
    let app_id = get("app_id").unwrap_or_default().to_owned();
    let Some(app) = sb.apps.get(&app_id) else {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
            "无效的AppID参数",
        ));
    };
    if let Some(problem) =
        sb.certificate_problem(app, get("app_cert_sn"), get("alipay_root_cert_sn"))
    {
        return reply(problem);
    }
    let verifier = &app.verifier;
    if get("format").is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-format",
            "无效的数据格式参数",
        ));
    }
    // Sandbox choice: only UTF-8 (what Moongate sends); Alipay also accepts GBK.
    if get("charset").is_some_and(|c| !c.eq_ignore_ascii_case("utf-8")) {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-charset",
            "字符集错误",
        ));
    }
    if get("sign_type") != Some("RSA2") {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature-type",
            "无效的签名类型参数",
        ));
    }
    if get("version") != Some("1.0") {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-version",
            "无效的版本参数",
        ));
    }
    let now = sb.clock_skew.now();
    match get("timestamp").and_then(parse_beijing_time) {
        Some(sent) if (sent - now).whole_seconds().abs() <= TIMESTAMP_WINDOW_SECS => {}
        _ => {
            return reply(err(
                "40002",
                "Invalid Arguments",
                "isv.invalid-timestamp",
                "非法的时间戳参数",
            ));
        }
    }
    let content = sign_string(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        Signed::Request,
    );
    if !verifier.verify_base64(content.as_bytes(), get("sign").unwrap_or_default()) {
        let sub_msg = format!(
            "验签出错，建议检查签名字符串或签名私钥与应用公钥是否匹配，网关生成的验签字符串为：{}",
            html_escape(&content)
        );
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature",
            &sub_msg,
        ));
    }
    // An ISV calls for a merchant that authorised it: the trade is the merchant's.
    let caller = app_id.clone();
    let app_id = match get("app_auth_token") {
        None => app_id,
        Some(token) => match sb.authorised_merchant(token, &caller, now) {
            Ok(merchant) => merchant,
            Err((code, msg, sub_code, sub_msg)) => {
                return reply(err(code, msg, sub_code, sub_msg));
            }
        },
    };
    if api == "alipay.system.oauth.token" {
        // Its parameters are its own, beside the protocol's (no biz_content).
        let (node, answer) = sb.oauth_token(&app_id, get("grant_type"), get("code"), now);
        return sb.respond(&signing, node, &answer, corrupt);
    }
    let biz: serde_json::Map<String, Value> = match get("biz_content").map(serde_json::from_str) {
        Some(Ok(Value::Object(map))) => map,
        _ => return reply(business("ACQ.INVALID_PARAMETER", "biz_content 参数无效")),
    };
    let biz_str = |key: &str| {
        biz.get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    if api == "alipay.open.auth.token.app" {
        return reply(sb.token_app(&caller, &biz, now));
    }
    if api == BILL_METHOD {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("127.0.0.1");
        return reply(sb.bill_link(
            &app_id,
            biz_str("bill_type").as_deref(),
            biz_str("bill_date").as_deref(),
            host,
            now,
        ));
    }
    let Some(out_trade_no) = biz_str("out_trade_no") else {
        return reply(business("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no"));
    };
    let valid_no = out_trade_no.len() <= 64
        && out_trade_no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_no {
        return reply(business("ACQ.INVALID_PARAMETER", "参数无效: out_trade_no"));
    }
    let key = (app_id.clone(), out_trade_no.clone());
    let notify_url = get("notify_url").map(str::to_owned);

    match api.as_str() {
        "alipay.trade.pay" => {
            // Sandbox choices: a code ending in 0000 needs the shopper's confirmation (10003,
            // pay it with /sandbox/pay), one ending in 9999 has no funds, others pay at once.
            if biz_str("scene").as_deref() != Some("bar_code") {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: scene"));
            }
            let Some(auth_code) = biz_str("auth_code") else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: auth_code"));
            };
            if !is_alipay_code(&auth_code) {
                return reply(business(
                    "ACQ.PAYMENT_AUTH_CODE_INVALID",
                    "支付失败，获取顾客账户信息失败，请顾客刷新付款码后重新收款",
                ));
            }
            let (total, subject) = match order_terms(&biz) {
                Ok(terms) => terms,
                Err(refusal) => return reply(refusal),
            };
            if auth_code.ends_with("9999") {
                return reply(business("ACQ.BUYER_BALANCE_NOT_ENOUGH", "买家余额不足"));
            }
            let waiting = auth_code.ends_with("0000");
            let trade_no = sb.next_number("2026");
            let mut inner = sb.lock();
            if let Some(existing) = inner.orders.get(&key) {
                let paid = existing
                    .trade
                    .as_ref()
                    .is_some_and(|t| t.status == TradeStatus::Success);
                return reply(if paid {
                    business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
                } else {
                    business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")
                });
            }
            let status = if waiting {
                TradeStatus::WaitBuyerPay
            } else {
                TradeStatus::Success
            };
            inner.orders.insert(
                key.clone(),
                Order {
                    app_id: caller.clone(),
                    auth_app_id: app_id.clone(),
                    out_trade_no: out_trade_no.clone(),
                    total,
                    subject,
                    notify_url: notify_url.clone(),
                    return_url: None,
                    qr_code: String::new(),
                    expires_at: now + time::Duration::minutes(15),
                    created_at: now,
                    trade: Some(Trade {
                        trade_no: trade_no.clone(),
                        status,
                        paid_at: (!waiting).then_some(now),
                        refunds: Vec::new(),
                    }),
                    buyer: None,
                },
            );
            drop(inner);
            if waiting {
                return reply(json!({
                    "code": "10003", "msg": "等待用户付款", "trade_no": trade_no,
                    "out_trade_no": out_trade_no, "total_amount": yuan(total),
                }));
            }
            reply(json!({
                "code": "10000", "msg": "Success", "trade_no": trade_no,
                "out_trade_no": out_trade_no, "buyer_logon_id": "csq***@sandbox.com",
                "total_amount": yuan(total), "receipt_amount": yuan(total),
                "gmt_payment": beijing_time(now).unwrap_or_default(),
            }))
        }
        "alipay.trade.precreate" | "alipay.trade.page.pay" | "alipay.trade.wap.pay" => {
            let redirect = api != "alipay.trade.precreate";
            if redirect && method != Method::GET && !is_form {
                return reply(business("ACQ.INVALID_PARAMETER", "页面支付须由浏览器发起"));
            }
            let (total, subject) = match order_terms(&biz) {
                Ok(terms) => terms,
                Err(refusal) => return reply(refusal),
            };
            let expected_product = match api.as_str() {
                "alipay.trade.page.pay" => Some("FAST_INSTANT_TRADE_PAY"),
                "alipay.trade.wap.pay" => Some("QUICK_WAP_WAY"),
                _ => None,
            };
            if let Some(product) = expected_product
                && biz_str("product_code").as_deref() != Some(product)
            {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: product_code"));
            }
            let timeout = match order_timeout(&biz) {
                Ok(timeout) => timeout,
                Err(refusal) => return reply(refusal),
            };
            let qr_code = {
                let mut inner = sb.lock();
                if let Some(existing) = inner.orders.get(&key) {
                    if existing
                        .trade
                        .as_ref()
                        .is_some_and(|t| t.status == TradeStatus::Success)
                    {
                        return reply(business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付"));
                    }
                    if existing.total != total || existing.subject != subject {
                        return reply(business("ACQ.INVALID_PARAMETER", "订单信息与原订单不一致"));
                    }
                    existing.qr_code.clone()
                } else {
                    inner.counter += 1;
                    let qr_code = format!("https://qr.alipay.com/bax{:020}", inner.counter);
                    inner.orders.insert(
                        key.clone(),
                        Order {
                            app_id: caller.clone(),
                            auth_app_id: app_id.clone(),
                            out_trade_no: out_trade_no.clone(),
                            total,
                            subject: subject.clone(),
                            notify_url: notify_url.clone(),
                            return_url: get("return_url").map(str::to_owned),
                            qr_code: qr_code.clone(),
                            expires_at: now + timeout,
                            created_at: now,
                            trade: None,
                            buyer: None,
                        },
                    );
                    qr_code
                }
            };
            if redirect {
                let page = format!(
                    "<!doctype html><meta charset=utf-8><title>Alipay sandbox cashier</title>\
                     <h1>Alipay sandbox cashier</h1><p>{} — ¥{}</p>\
                     <form method=post action=\"/sandbox/cashier/pay\">\
                     <input type=hidden name=app_id value=\"{}\"><input type=hidden name=out_trade_no value=\"{}\">\
                     <button type=submit>Pay ¥{}</button></form>",
                    html_escape(&subject),
                    yuan(total),
                    html_escape(&app_id),
                    html_escape(&out_trade_no),
                    yuan(total)
                );
                return Html(page).into_response();
            }
            reply(
                json!({"code": "10000", "msg": "Success", "out_trade_no": out_trade_no, "qr_code": qr_code}),
            )
        }
        "alipay.trade.create" => {
            // Sandbox choice: the JSAPI product only (Alipay's create also serves others).
            if biz_str("product_code").as_deref() != Some("JSAPI_PAY") {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: product_code"));
            }
            let (total, subject) = match order_terms(&biz) {
                Ok(terms) => terms,
                Err(refusal) => return reply(refusal),
            };
            let timeout = match order_timeout(&biz) {
                Ok(timeout) => timeout,
                Err(refusal) => return reply(refusal),
            };
            let buyer = match sb.trade_create_buyer(&app_id, &biz) {
                Ok(buyer) => buyer,
                Err(refusal) => return reply(refusal),
            };
            let trade_no = sb.next_number("2026");
            let mut inner = sb.lock();
            if let Some(existing) = inner.orders.get(&key) {
                let same = existing.total == total
                    && existing.subject == subject
                    && existing.buyer.as_deref() == Some(buyer.as_str());
                return reply(match existing.trade.as_ref() {
                    Some(t) if t.status == TradeStatus::Success => {
                        business("ACQ.TRADE_HAS_SUCCESS", "交易已被支付")
                    }
                    Some(t) if t.status == TradeStatus::Closed => {
                        business("ACQ.TRADE_HAS_CLOSE", "交易已经关闭")
                    }
                    Some(t) if same => json!({
                        "code": "10000", "msg": "Success",
                        "out_trade_no": out_trade_no, "trade_no": t.trade_no,
                    }),
                    _ => business("ACQ.CONTEXT_INCONSISTENT", "交易信息被篡改"),
                });
            }
            inner.orders.insert(
                key.clone(),
                Order {
                    app_id: caller.clone(),
                    auth_app_id: app_id.clone(),
                    out_trade_no: out_trade_no.clone(),
                    total,
                    subject,
                    notify_url: notify_url.clone(),
                    return_url: None,
                    qr_code: String::new(),
                    expires_at: now + timeout,
                    created_at: now,
                    trade: Some(Trade {
                        trade_no: trade_no.clone(),
                        status: TradeStatus::WaitBuyerPay,
                        paid_at: None,
                        refunds: Vec::new(),
                    }),
                    buyer: Some(buyer),
                },
            );
            drop(inner);
            reply(json!({
                "code": "10000", "msg": "Success",
                "out_trade_no": out_trade_no, "trade_no": trade_no,
            }))
        }
        "alipay.trade.query" => {
            let inner = sb.lock();
            let Some(trade) = inner
                .orders
                .get(&key)
                .and_then(|o| o.trade.clone().map(|t| (o.clone(), t)))
            else {
                return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            let (order, trade) = trade;
            let mut node = json!({
                "code": "10000", "msg": "Success",
                "trade_no": trade.trade_no, "out_trade_no": order.out_trade_no,
                "trade_status": effective_status(&order, &trade, now).as_str(),
                "total_amount": yuan(order.total),
                "buyer_logon_id": "csq***@sandbox.com",
            });
            if let Some(map) = node.as_object_mut() {
                let (field, buyer) = sb.buyer_named(&order, "buyer_user_id");
                map.insert(field.into(), json!(buyer));
            }
            if let (Some(paid_at), Some(map)) = (trade.paid_at, node.as_object_mut()) {
                map.insert(
                    "send_pay_date".into(),
                    Value::String(beijing_time(paid_at).unwrap_or_default()),
                );
                map.insert("receipt_amount".into(), Value::String(yuan(order.total)));
            }
            reply(node)
        }
        "alipay.trade.close" => {
            let mut inner = sb.lock();
            let Some(order) = inner.orders.get_mut(&key) else {
                return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            let Some(trade) = order.trade.as_mut() else {
                // A QR never scanned has no trade; Alipay answers TRADE_NOT_EXIST and a later
                // scan can still pay until the QR expires (the gateway records such late payments).
                return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            match trade.status {
                TradeStatus::WaitBuyerPay => {
                    trade.status = TradeStatus::Closed;
                    reply(
                        json!({"code": "10000", "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": out_trade_no}),
                    )
                }
                // Sandbox choice: closing a closed trade succeeds again (idempotent).
                TradeStatus::Closed => reply(
                    json!({"code": "10000", "msg": "Success", "trade_no": trade.trade_no, "out_trade_no": out_trade_no}),
                ),
                TradeStatus::Success => reply(business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法")),
            }
        }
        "alipay.trade.refund" => {
            let Some(amount) = biz_str("refund_amount").as_deref().and_then(parse_amount) else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: refund_amount"));
            };
            let request_no = biz_str("out_request_no").unwrap_or_else(|| out_trade_no.clone());
            let outcome = {
                let mut inner = sb.lock();
                let Some(order) = inner.orders.get_mut(&key) else {
                    return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
                };
                let total = order.total;
                let Some(trade) = order.trade.as_mut() else {
                    return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
                };
                if let Some((_, previous, _)) =
                    trade.refunds.iter().find(|(no, _, _)| *no == request_no)
                {
                    if *previous != amount {
                        return reply(business(
                            "ACQ.INVALID_PARAMETER",
                            "退款请求号对应的金额不一致",
                        ));
                    }
                    (trade.trade_no.clone(), trade.refunded(), false, None)
                } else {
                    let refundable = trade.status == TradeStatus::Success
                        || (trade.status == TradeStatus::Closed && trade.paid_at.is_some());
                    if !refundable {
                        return reply(business("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"));
                    }
                    if trade.refunded() + amount > total {
                        return reply(business("ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"));
                    }
                    trade.refunds.push((request_no.clone(), amount, now));
                    if trade.refunded() == total {
                        trade.status = TradeStatus::Closed;
                    }
                    let snapshot = order.clone();
                    (
                        snapshot
                            .trade
                            .as_ref()
                            .map(|t| t.trade_no.clone())
                            .unwrap_or_default(),
                        snapshot.trade.as_ref().map(Trade::refunded).unwrap_or(0),
                        true,
                        Some(snapshot),
                    )
                }
            };
            let (trade_no, refunded, moved, snapshot) = outcome;
            if let Some(order) = snapshot {
                sb.notify(&order, Some(&request_no));
            }
            reply(json!({
                "code": "10000", "msg": "Success", "trade_no": trade_no, "out_trade_no": out_trade_no,
                "buyer_logon_id": "csq***@sandbox.com", "fund_change": if moved { "Y" } else { "N" },
                "refund_fee": yuan(refunded), "gmt_refund_pay": beijing_time(now).unwrap_or_default(),
            }))
        }
        "alipay.trade.fastpay.refund.query" => {
            let Some(request_no) = biz_str("out_request_no") else {
                return reply(business(
                    "ACQ.INVALID_PARAMETER",
                    "参数无效: out_request_no",
                ));
            };
            let inner = sb.lock();
            let Some(order) = inner.orders.get(&key) else {
                return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            let Some(trade) = &order.trade else {
                return reply(business("ACQ.TRADE_NOT_EXIST", "交易不存在"));
            };
            let mut node = json!({
                "code": "10000", "msg": "Success", "trade_no": trade.trade_no,
                "out_trade_no": out_trade_no, "out_request_no": request_no, "total_amount": yuan(order.total),
            });
            if let (Some((_, amount, _)), Some(map)) = (
                trade.refunds.iter().find(|(no, _, _)| *no == request_no),
                node.as_object_mut(),
            ) {
                map.insert("refund_amount".into(), Value::String(yuan(*amount)));
                map.insert(
                    "refund_status".into(),
                    Value::String("REFUND_SUCCESS".into()),
                );
            }
            reply(node)
        }
        _ => reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-method",
            "不存在的方法名",
        )),
    }
}

/// An order's `total_amount` (fen) and `subject`, as every order-making method checks them.
fn order_terms(biz: &serde_json::Map<String, Value>) -> Result<(i64, String), Value> {
    let field = |key: &str| {
        biz.get(key)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let total = field("total_amount")
        .and_then(parse_amount)
        .ok_or_else(|| business("ACQ.INVALID_PARAMETER", "参数无效: total_amount"))?;
    let subject = field("subject")
        .filter(|s| s.chars().count() <= 256)
        .ok_or_else(|| business("ACQ.INVALID_PARAMETER", "参数无效: subject"))?;
    Ok((total, subject.to_owned()))
}

/// An order's `timeout_express`, 15 days when absent.
fn order_timeout(biz: &serde_json::Map<String, Value>) -> Result<time::Duration, Value> {
    match biz
        .get("timeout_express")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
    {
        Some(text) => parse_timeout_express(text)
            .ok_or_else(|| business("ACQ.INVALID_PARAMETER", "参数无效: timeout_express")),
        None => Ok(time::Duration::days(15)),
    }
}

pub(super) fn effective_status(order: &Order, trade: &Trade, now: OffsetDateTime) -> TradeStatus {
    if trade.status == TradeStatus::WaitBuyerPay && order.expires_at <= now {
        TradeStatus::Closed
    } else {
        trade.status
    }
}
