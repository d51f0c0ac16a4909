//! Alipay sandbox: the control endpoints that play the shopper and inject faults, and the wallet page.

use super::*;

pub(super) async fn control_pay(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.scan(&order, true))
}

/// Skews the clock the sandbox checks request timestamps against.
pub(super) async fn control_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<crate::sandbox::ClockBody>,
) -> StatusCode {
    sb.clock_skew.set(&clock);
    StatusCode::NO_CONTENT
}

/// Alipay moves to its next public-key certificate (certificate mode): answers are signed with
/// its key and name its SN from now on. `409` when there is no next certificate.
pub(super) async fn control_rotate_certificate(State(sb): State<Shared>) -> Response {
    match sb.rotate_certificate() {
        Some(sn) => axum::Json(json!({ "alipay_cert_sn": sn })).into_response(),
        None => (StatusCode::CONFLICT, "no next certificate").into_response(),
    }
}

pub(super) async fn control_scan(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.scan(&order, false))
}

pub(super) async fn cashier_pay(
    State(sb): State<Shared>,
    axum::Form(order): axum::Form<ControlOrder>,
) -> Response {
    match sb.scan(&order, true) {
        Ok(value) => {
            let back = value
                .get("return_url")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_owned();
            Html(format!(
                "<!doctype html><meta charset=utf-8><p>Paid. <a href=\"{}\">Back to the shop</a></p>",
                html_escape(&back)
            ))
            .into_response()
        }
        Err((status, message)) => (status, message).into_response(),
    }
}

/// The order a QR code (`qr_code`) belongs to.
pub(super) fn order_by_code(sb: &Sandbox, code: &str) -> Option<Order> {
    sb.lock()
        .orders
        .values()
        .find(|o| !o.qr_code.is_empty() && o.qr_code == code)
        .cloned()
}

/// `GET /sandbox/wallet?code=`: the phone scanned a precreate QR code.
pub(super) async fn wallet_scan(
    State(sb): State<Shared>,
    Query(scan): Query<crate::sandbox::WalletScan>,
) -> Response {
    match order_by_code(&sb, &scan.code) {
        Some(order) => {
            crate::sandbox::wallet_page("支付宝 Alipay", &order.subject, order.total, &scan.code)
        }
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
        out_trade_no: order.out_trade_no,
        app_id: Some(order.app_id),
        notify: true,
    };
    crate::sandbox::wallet_paid(sb.scan(&control, true))
}

/// How many provider calls the sandbox has received (every one, faulted or not).
pub(super) async fn control_stats(State(sb): State<Shared>) -> Response {
    axum::Json(json!({"calls": sb.lock().calls})).into_response()
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

/// Re-sends the latest notification of an order once more (a duplicate, same `notify_id`).
pub(super) async fn control_resend(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let found = {
        let inner = sb.lock();
        let latest = inner
            .notifications
            .iter()
            .rposition(|n| n.out_trade_no == order.out_trade_no);
        latest.and_then(|index| {
            let sent = inner.notifications.get(index)?;
            let url = inner
                .orders
                .values()
                .find(|o| o.out_trade_no == order.out_trade_no)?
                .notify_url
                .clone()?;
            Some((url, sent.body.clone()))
        })
    };
    let Some((url, body)) = found else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let request = HttpRequest {
        method: HttpMethod::Post,
        url,
        headers: vec![("content-type".into(), FORM_CONTENT_TYPE.into())],
        body: body.into_bytes(),
    };
    match sb.client.send(&request).await {
        Ok(response) => (
            StatusCode::OK,
            axum::Json(
                json!({"status": response.status, "body": String::from_utf8_lossy(&response.body)}),
            ),
        )
            .into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// Delivers the latest notification of an order once more with a signed field altered after
/// signing (`notify_time`), as a forger replaying it would; answers whether the receiver
/// acknowledged it (exactly `success`). Not counted as an attempt.
pub(super) async fn control_forge(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    let found = {
        let inner = sb.lock();
        let sent = inner
            .notifications
            .iter()
            .rev()
            .find(|n| n.out_trade_no == order.out_trade_no)
            .map(|n| n.body.clone());
        let url = inner
            .orders
            .values()
            .find(|o| o.out_trade_no == order.out_trade_no)
            .and_then(|o| o.notify_url.clone());
        sent.zip(url)
    };
    let Some((body, url)) = found else {
        return (StatusCode::NOT_FOUND, "no notification for this order").into_response();
    };
    let forged = {
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(body.as_bytes()) {
            let value = if key == "notify_time" {
                "2000-01-01 00:00:00".into()
            } else {
                value
            };
            form.append_pair(&key, &value);
        }
        form.finish()
    };
    let request = HttpRequest {
        method: HttpMethod::Post,
        url,
        headers: vec![("content-type".into(), FORM_CONTENT_TYPE.into())],
        body: forged.into_bytes(),
    };
    match sb.client.send(&request).await {
        Ok(response) => axum::Json(json!({
            "acknowledged": response.status == 200 && response.body == b"success",
        }))
        .into_response(),
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}
