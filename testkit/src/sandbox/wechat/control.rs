//! WeChat Pay sandbox: the control endpoints that play the shopper and inject faults, and the wallet and H5 pages.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ControlOrder {
    pub(super) out_trade_no: String,
    #[serde(default)]
    pub(super) mchid: Option<String>,
    /// `false` pays without sending the notification (a lost notification).
    #[serde(default = "yes")]
    pub(super) notify: bool,
}

pub(super) fn yes() -> bool {
    true
}

pub(super) async fn control_pay(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.pay(&order))
}

/// How many provider calls the sandbox has received (every one, faulted or not).
pub(super) async fn control_stats(State(sb): State<Shared>) -> Response {
    axum::Json(json!({"calls": sb.lock().calls})).into_response()
}

/// Holds new notifications back until `/sandbox/release`.
pub(super) async fn control_hold(State(sb): State<Shared>) -> StatusCode {
    sb.lock().held.get_or_insert_with(Vec::new);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
pub(super) struct ReleaseBody {
    /// Send them newest first (a reordered delivery).
    #[serde(default)]
    pub(super) reverse: bool,
}

/// Sends the held notifications, in order or reversed, one after the other, then delivers
/// normally again.
pub(super) async fn control_release(
    State(sb): State<Shared>,
    axum::Json(release): axum::Json<ReleaseBody>,
) -> Response {
    let mut held = sb.lock().held.take().unwrap_or_default();
    if release.reverse {
        held.reverse();
    }
    let count = held.len();
    for index in held {
        let mode = {
            let inner = sb.lock();
            let mchid = inner.notifications.get(index).map(|n| n.mchid.clone());
            mchid
                .and_then(|m| sb.merchants.get(&m).map(|m| m.settings.key_mode))
                .unwrap_or(KeyMode::PublicKey)
        };
        // The first attempt of each in turn, so the order holds; retries follow their schedule.
        let status = sb.attempt(index, mode, false).await;
        if !matches!(status, Some(200 | 204)) {
            let this = Arc::clone(&sb);
            tokio::spawn(async move { this.deliver(index, mode).await });
        }
    }
    axum::Json(json!({"released": count})).into_response()
}

/// Skews the clock the sandbox signs with (answers and notifications).
pub(super) async fn control_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<crate::sandbox::ClockBody>,
) -> StatusCode {
    sb.clock_skew.set(&clock);
    StatusCode::NO_CONTENT
}

pub(super) async fn control_fault(
    State(sb): State<Shared>,
    axum::Json(fault): axum::Json<FaultBody>,
) -> StatusCode {
    sb.lock().fault.arm(&fault);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
pub(super) struct NotificationQuery {
    pub(super) out_trade_no: String,
}

pub(super) async fn control_notifications(
    State(sb): State<Shared>,
    Query(query): Query<NotificationQuery>,
) -> Response {
    let sent: Vec<SentNotification> = sb
        .lock()
        .notifications
        .iter()
        .filter(|n| n.out_trade_no == query.out_trade_no)
        .cloned()
        .collect();
    axum::Json(sent).into_response()
}

pub(super) fn latest_notification(
    sb: &WechatSandbox,
    out_trade_no: &str,
) -> Option<(usize, KeyMode)> {
    let inner = sb.lock();
    let index = inner
        .notifications
        .iter()
        .rposition(|n| n.out_trade_no == out_trade_no)?;
    let mchid = &inner.notifications.get(index)?.mchid;
    let mode = sb.merchants.get(mchid)?.settings.key_mode;
    Some((index, mode))
}

/// Sends the latest notification of an order once more (a duplicate with the same `id`).
pub(super) async fn control_resend(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let status = sb.attempt(index, mode, false).await.unwrap_or(0);
    axum::Json(json!({"status": status})).into_response()
}

/// Sends a `WECHATPAY/SIGNTEST/` probe of the latest notification; answers with the status
/// the receiver gave (it must be 4XX or 5XX).
pub(super) async fn control_probe(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let status = sb.attempt(index, mode, true).await.unwrap_or(0);
    axum::Json(json!({"status": status})).into_response()
}

/// Delivers the latest notification of an order once more, signed over its body but with the
/// body altered after signing, as a forger would; answers whether the receiver acknowledged
/// it (200 or 204). Not counted as an attempt.
pub(super) async fn control_forge(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &order.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let Some((url, body)) = sb
        .lock()
        .notifications
        .get(index)
        .map(|n| (n.url.clone(), n.body.clone()))
    else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let mut headers = sb.signature_headers(mode, body.as_bytes(), false);
    headers.push(("content-type".into(), "application/json".into()));
    let forged = body.replacen("\"id\":\"", "\"id\":\"X", 1);
    let request = HttpRequest {
        method: HttpMethod::Post,
        url,
        headers,
        body: forged.into_bytes(),
    };
    let status = match sb.client.send(&request).await {
        Ok(response) => response.status,
        Err(_) => 0,
    };
    axum::Json(json!({"acknowledged": status == 200 || status == 204})).into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct Misroute {
    pub(super) out_trade_no: String,
    pub(super) url: String,
}

/// Delivers the latest notification of an order, signed as WeChat Pay signs it, to another
/// URL: one sub-merchant's notification arriving at a sibling's (every sub-merchant of a
/// provider shares its keys). Answers the receiver's status; not counted as an attempt.
pub(super) async fn control_misroute(
    State(sb): State<Shared>,
    axum::Json(misroute): axum::Json<Misroute>,
) -> Response {
    let Some((index, mode)) = latest_notification(&sb, &misroute.out_trade_no) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let Some(body) = sb.lock().notifications.get(index).map(|n| n.body.clone()) else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let mut headers = sb.signature_headers(mode, body.as_bytes(), false);
    headers.push(("content-type".into(), "application/json".into()));
    let request = HttpRequest {
        method: HttpMethod::Post,
        url: misroute.url,
        headers,
        body: body.into_bytes(),
    };
    let status = match sb.client.send(&request).await {
        Ok(response) => response.status,
        Err(_) => 0,
    };
    axum::Json(json!({"status": status})).into_response()
}

/// The order a Native `code_url` (`weixin://wxpay/bizpayurl?pr={prepay_id}`) belongs to.
pub(super) fn order_by_code(sb: &WechatSandbox, code: &str) -> Option<Order> {
    let prepay_id = code.strip_prefix("weixin://wxpay/bizpayurl?pr=")?;
    sb.lock()
        .orders
        .values()
        .find(|o| o.prepay_id == prepay_id && o.trade_type == "NATIVE")
        .cloned()
}

/// `GET /sandbox/wallet?code=`: the phone scanned a Native QR code.
pub(super) async fn wallet_scan(
    State(sb): State<Shared>,
    Query(scan): Query<crate::sandbox::WalletScan>,
) -> Response {
    match order_by_code(&sb, &scan.code) {
        Some(order) => crate::sandbox::wallet_page(
            "微信支付 WeChat Pay",
            &order.description,
            order.total,
            &scan.code,
        ),
        None => (StatusCode::NOT_FOUND, "unknown QR code").into_response(),
    }
}

/// `POST /sandbox/wallet`: the shopper confirmed; pay and notify.
pub(super) async fn wallet_pay(
    State(sb): State<Shared>,
    axum::Form(scan): axum::Form<crate::sandbox::WalletScan>,
) -> Response {
    let Some(order) = order_by_code(&sb, &scan.code) else {
        return (StatusCode::NOT_FOUND, "unknown QR code").into_response();
    };
    let control = ControlOrder {
        mchid: Some(order.owner().to_owned()),
        out_trade_no: order.out_trade_no,
        notify: true,
    };
    crate::sandbox::wallet_paid(sb.pay(&control))
}

#[derive(Debug, Deserialize)]
pub(super) struct H5Query {
    pub(super) prepay_id: String,
}

/// The H5 cashier a shopper's mobile browser lands on.
pub(super) async fn h5_page(State(sb): State<Shared>, Query(query): Query<H5Query>) -> Response {
    let found = sb
        .lock()
        .orders
        .values()
        .find(|o| o.prepay_id == query.prepay_id)
        .cloned();
    let Some(order) = found else {
        return (StatusCode::NOT_FOUND, "unknown prepay_id").into_response();
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
         <title>WeChat Pay sandbox</title><h1>WeChat Pay sandbox</h1><p>{} — ¥{}.{:02}</p>\
         <form method=post action=\"/sandbox/h5/pay\"><input type=hidden name=out_trade_no value=\"{}\">\
         <input type=hidden name=mchid value=\"{}\"><button type=submit>Pay</button></form>",
        html_escape(&order.description),
        order.total / 100,
        order.total % 100,
        html_escape(&order.out_trade_no),
        html_escape(order.owner())
    ))
    .into_response()
}

pub(super) async fn h5_pay(
    State(sb): State<Shared>,
    axum::Form(order): axum::Form<ControlOrder>,
) -> Response {
    match sb.pay(&order) {
        Ok(_) => Html("<!doctype html><meta charset=utf-8><p>Paid.</p>").into_response(),
        Err((status, message)) => (status, message).into_response(),
    }
}
