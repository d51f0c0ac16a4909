//! A strict local re-implementation of the Alipay classic gateway (china-wallets.md section F).
//!
//! It verifies RSA2 request signatures over the union of query and form parameters (duplicates
//! refused), answers with Alipay's own codes (`40001`, `40002 isv.invalid-signature` quoting the
//! HTML-escaped sign string, `40004 ACQ.*`), emits compact JSON with the response node first,
//! `/` escaped as `\/` and the node bytes signed with its own key, keeps trade state (a QR order
//! becomes a trade only when "scanned"), refunds idempotently by `out_request_no`, and sends
//! V1-signed form notifications retried on Alipay's schedule until the reply is exactly
//! `success`. Control endpoints under `/sandbox/` play the shopper and inject faults.
//!
//! Choices where Alipay's behaviour is not published are marked "sandbox choice".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::protocol::alipay::{
    FORM_CONTENT_TYPE, Signed, beijing_time, parse_beijing_time, sign_string,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get, post};
use moongate_contract::crypto::{RsaSigner, RsaVerifier};
use moongate_contract::{Currency, HttpMethod, HttpRequest, Money};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

use super::{FaultBody, FaultMode, Faults, control_reply, html_escape, statements, with_faults};
use crate::net::HttpClient;

/// Alipay's retry schedule after the first attempt: 4m, 10m, 10m, 1h, 2h, 6h, 15h (A.8).
const NOTIFY_SCHEDULE_SECS: [u64; 7] = [240, 600, 600, 3600, 7200, 21_600, 54_000];

/// Accepted request clock skew (sandbox choice: Alipay does not publish its window).
const TIMESTAMP_WINDOW_SECS: i64 = 15 * 60;

const BILL_METHOD: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// Bill download links expire after 30 seconds (A.11).
const BILL_LINK_SECS: i64 = 30;

/// How the sandbox is set up.
#[derive(Debug)]
pub struct SandboxSettings {
    /// The sandbox's own private key (PEM): it signs responses and notifications with it.
    pub private_key_pem: String,
    /// Registered applications: `app_id` → the app's public key (PEM).
    pub apps: Vec<(String, String)>,
    /// Divides the notification retry schedule (1 = Alipay's real timing).
    pub time_divisor: u32,
    /// Seller PID reported in notifications.
    pub seller_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TradeStatus {
    WaitBuyerPay,
    Success,
    Closed,
}

impl TradeStatus {
    fn as_str(self) -> &'static str {
        match self {
            TradeStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
            TradeStatus::Success => "TRADE_SUCCESS",
            TradeStatus::Closed => "TRADE_CLOSED",
        }
    }
}

#[derive(Clone, Debug)]
struct Order {
    app_id: String,
    out_trade_no: String,
    total: i64,
    subject: String,
    notify_url: Option<String>,
    return_url: Option<String>,
    qr_code: String,
    expires_at: OffsetDateTime,
    created_at: OffsetDateTime,
    trade: Option<Trade>,
}

#[derive(Clone, Debug)]
struct Trade {
    trade_no: String,
    status: TradeStatus,
    paid_at: Option<OffsetDateTime>,
    /// (`out_request_no`, amount, when).
    refunds: Vec<(String, i64, OffsetDateTime)>,
}

impl Trade {
    fn refunded(&self) -> i64 {
        self.refunds.iter().map(|(_, amount, _)| amount).sum()
    }
}

/// One notification and its delivery attempts.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SentNotification {
    /// Stable across retries.
    pub notify_id: String,
    /// The order.
    pub out_trade_no: String,
    /// Form body as sent.
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
    /// True once the reply was exactly `success`.
    pub acknowledged: bool,
}

#[derive(Debug)]
struct Inner {
    orders: HashMap<(String, String), Order>,
    /// Issued bill download links (labelled with the zip's file name) and the statement clock.
    bills: statements::BillDesk,
    fault: Faults,
    notifications: Vec<SentNotification>,
    counter: u64,
    calls: u64,
}

/// Shared sandbox state.
#[derive(Debug)]
pub struct Sandbox {
    signer: RsaSigner,
    apps: HashMap<String, RsaVerifier>,
    seller_id: String,
    time_divisor: u32,
    client: HttpClient,
    inner: Mutex<Inner>,
}

type Shared = Arc<Sandbox>;

/// Errors starting the sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A key did not load.
    #[error("key: {0}")]
    Key(String),
    /// Network.
    #[error("{0}")]
    Io(String),
}

impl Sandbox {
    /// Builds the state.
    pub fn new(settings: SandboxSettings) -> Result<Sandbox, SandboxError> {
        let signer = RsaSigner::from_pem(&settings.private_key_pem)
            .map_err(|e| SandboxError::Key(format!("sandbox private key: {e}")))?;
        let mut apps = HashMap::new();
        for (app_id, pem) in settings.apps {
            let verifier = RsaVerifier::from_pem(&pem)
                .map_err(|e| SandboxError::Key(format!("public key of app {app_id}: {e}")))?;
            apps.insert(app_id, verifier);
        }
        let client = HttpClient::new(Duration::from_secs(3), Duration::from_secs(10))
            .map_err(SandboxError::Io)?;
        Ok(Sandbox {
            signer,
            apps,
            seller_id: settings.seller_id,
            time_divisor: settings.time_divisor.max(1),
            client,
            inner: Mutex::new(Inner {
                orders: HashMap::new(),
                bills: statements::BillDesk::default(),
                fault: Faults::none(),
                notifications: Vec::new(),
                counter: 0,
                calls: 0,
            }),
        })
    }

    /// Every order the sandbox holds.
    pub fn orders(&self) -> Vec<super::OrderView> {
        self.lock()
            .orders
            .values()
            .map(|o| super::OrderView {
                out_trade_no: o.out_trade_no.clone(),
                total: o.total,
                paid: o.trade.as_ref().is_some_and(|t| t.paid_at.is_some()),
                refunds: o
                    .trade
                    .as_ref()
                    .map(|t| {
                        t.refunds
                            .iter()
                            .map(|(no, amount, _)| (no.clone(), *amount))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked mid-update; the sandbox keeps going.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn next_number(&self, prefix: &str) -> String {
        let mut inner = self.lock();
        inner.counter += 1;
        let now = OffsetDateTime::now_utc();
        format!("{prefix}{}{:010}", now.unix_timestamp(), inner.counter)
    }

    /// Signs and renders a response: compact JSON, node first, `/` escaped, `sign` last.
    fn respond(&self, node_name: &str, node: &Value, corrupt: bool) -> Response {
        let node_text = node.to_string().replace('/', "\\/");
        let signed = if corrupt {
            format!("{node_text} ")
        } else {
            node_text.clone()
        };
        let sign = self
            .signer
            .sign_base64(signed.as_bytes())
            .unwrap_or_default();
        let body = format!("{{\"{node_name}\":{node_text},\"sign\":\"{sign}\"}}");
        let mut response = (StatusCode::OK, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=utf-8"),
        );
        response
    }
}

fn yuan(fen: i64) -> String {
    Money::new(fen, Currency::CNY).to_decimal_string()
}

/// Strict two-decimal yuan in Alipay's range.
fn parse_amount(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.')?;
    if fraction.len() != 2 || whole.is_empty() || (whole.len() > 1 && whole.starts_with('0')) {
        return None;
    }
    let fen = Money::parse_decimal(text, Currency::CNY).ok()?.minor;
    (1..=10_000_000_000).contains(&fen).then_some(fen)
}

fn parse_timeout_express(text: &str) -> Option<time::Duration> {
    let unit = text.chars().last()?;
    let digits = text.get(..text.len().checked_sub(1)?)?;
    let value: i64 = digits.parse().ok()?;
    let minutes = match unit {
        'm' => value,
        'h' => value.checked_mul(60)?,
        'd' => value.checked_mul(1440)?,
        _ => return None,
    };
    (1..=21_600)
        .contains(&minutes)
        .then(|| time::Duration::minutes(minutes))
}

fn node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

fn err(code: &str, msg: &str, sub_code: &str, sub_msg: &str) -> Value {
    json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})
}

fn business(sub_code: &str, sub_msg: &str) -> Value {
    err("40004", "Business Failed", sub_code, sub_msg)
}

/// The router: `/gateway.do` plus `/sandbox/*` controls.
pub fn router(sandbox: Shared) -> Router {
    Router::new()
        .route("/gateway.do", any(gateway_do))
        .route("/sandbox/pay", post(control_pay))
        .route("/sandbox/forge", post(control_forge))
        .route("/sandbox/scan", post(control_scan))
        .route("/sandbox/fault", post(control_fault))
        .route("/sandbox/stats", get(control_stats))
        .route("/sandbox/notifications", get(control_notifications))
        .route("/sandbox/resend", post(control_resend))
        .route("/sandbox/cashier/pay", post(cashier_pay))
        .route("/sandbox/wallet", get(wallet_scan).post(wallet_pay))
        .route("/sandbox/statement-clock", post(control_statement_clock))
        .route("/downloadBillFile.resource", get(download_bill))
        .with_state(sandbox)
}

/// Starts the sandbox on a bound listener.
pub async fn start_on(
    settings: SandboxSettings,
    listener: TcpListener,
) -> Result<(Arc<Sandbox>, tokio::task::JoinHandle<()>), SandboxError> {
    let sandbox = Arc::new(Sandbox::new(settings)?);
    let task = super::serve(listener, router(Arc::clone(&sandbox)));
    Ok((sandbox, task))
}

async fn gateway_do(
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

async fn gateway_handle(
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
    let Some(api) = get("method") else {
        return sb.respond(
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
        BILL_METHOD,
    ];
    if !known.contains(&api.as_str()) {
        return sb.respond(
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
    let reply = |node: Value| sb.respond(&name, &node, corrupt);
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
    let Some(verifier) = sb.apps.get(&app_id) else {
        return reply(err(
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
            "无效的AppID参数",
        ));
    };
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
    let now = OffsetDateTime::now_utc();
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
            let Some(total) = biz_str("total_amount").as_deref().and_then(parse_amount) else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: total_amount"));
            };
            let Some(subject) = biz_str("subject").filter(|s| s.chars().count() <= 256) else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: subject"));
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
                    app_id: app_id.clone(),
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
            let Some(total) = biz_str("total_amount").as_deref().and_then(parse_amount) else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: total_amount"));
            };
            let Some(subject) = biz_str("subject").filter(|s| s.chars().count() <= 256) else {
                return reply(business("ACQ.INVALID_PARAMETER", "参数无效: subject"));
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
            let timeout = match biz_str("timeout_express") {
                Some(text) => match parse_timeout_express(&text) {
                    Some(duration) => duration,
                    None => {
                        return reply(business(
                            "ACQ.INVALID_PARAMETER",
                            "参数无效: timeout_express",
                        ));
                    }
                },
                None => time::Duration::days(15),
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
                            app_id: app_id.clone(),
                            out_trade_no: out_trade_no.clone(),
                            total,
                            subject: subject.clone(),
                            notify_url: notify_url.clone(),
                            return_url: get("return_url").map(str::to_owned),
                            qr_code: qr_code.clone(),
                            expires_at: now + timeout,
                            created_at: now,
                            trade: None,
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

fn effective_status(order: &Order, trade: &Trade, now: OffsetDateTime) -> TradeStatus {
    if trade.status == TradeStatus::WaitBuyerPay && order.expires_at <= now {
        TradeStatus::Closed
    } else {
        trade.status
    }
}

#[derive(Debug, Deserialize)]
struct ControlOrder {
    out_trade_no: String,
    #[serde(default)]
    app_id: Option<String>,
    /// `false` pays without sending the notification (a lost notification).
    #[serde(default = "yes")]
    notify: bool,
}

fn yes() -> bool {
    true
}

impl Sandbox {
    fn find_key(&self, order: &ControlOrder) -> Option<(String, String)> {
        let inner = self.lock();
        inner
            .orders
            .keys()
            .find(|(app, no)| {
                *no == order.out_trade_no && order.app_id.as_ref().is_none_or(|a| a == app)
            })
            .cloned()
    }

    /// Scans (and optionally pays) an order, as the shopper's phone would.
    fn scan(
        self: &Arc<Self>,
        order: &ControlOrder,
        pay: bool,
    ) -> Result<Value, (StatusCode, String)> {
        let key = self
            .find_key(order)
            .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
        let now = OffsetDateTime::now_utc();
        let trade_no = self.next_number("2026");
        let snapshot = {
            let mut inner = self.lock();
            let order = inner
                .orders
                .get_mut(&key)
                .ok_or((StatusCode::NOT_FOUND, "no such order".to_owned()))?;
            if order.expires_at <= now {
                return Err((StatusCode::CONFLICT, "the order has expired".to_owned()));
            }
            let trade = order.trade.get_or_insert(Trade {
                trade_no,
                status: TradeStatus::WaitBuyerPay,
                paid_at: None,
                refunds: Vec::new(),
            });
            match (trade.status, pay) {
                (TradeStatus::Closed, _) => {
                    return Err((StatusCode::CONFLICT, "the trade is closed".to_owned()));
                }
                (TradeStatus::Success, _) => {
                    return Err((StatusCode::CONFLICT, "already paid".to_owned()));
                }
                (TradeStatus::WaitBuyerPay, true) => {
                    trade.status = TradeStatus::Success;
                    trade.paid_at = Some(now);
                }
                (TradeStatus::WaitBuyerPay, false) => {}
            }
            order.clone()
        };
        if pay && order.notify {
            self.notify(&snapshot, None);
        }
        let trade = snapshot.trade.as_ref();
        Ok(json!({
            "out_trade_no": snapshot.out_trade_no,
            "trade_no": trade.map(|t| t.trade_no.clone()),
            "trade_status": trade.map(|t| t.status.as_str()),
            "return_url": snapshot.return_url,
        }))
    }

    /// Builds, signs (rule V1) and starts delivering a `trade_status_sync` notification.
    fn notify(self: &Arc<Self>, order: &Order, refund_request_no: Option<&str>) {
        let (Some(url), Some(trade)) = (order.notify_url.clone(), order.trade.clone()) else {
            return;
        };
        let now = OffsetDateTime::now_utc();
        let notify_id = self.next_number("2026n");
        let beijing = |t: OffsetDateTime| beijing_time(t).unwrap_or_default();
        let total = yuan(order.total);
        let mut fields: Vec<(&str, String)> = vec![
            ("gmt_create", beijing(order.created_at)),
            ("charset", "utf-8".into()),
            ("seller_id", self.seller_id.clone()),
            ("subject", order.subject.clone()),
            ("buyer_id", "2088102177846875".into()),
            ("buyer_logon_id", "csq***@sandbox.com".into()),
            ("invoice_amount", total.clone()),
            ("notify_id", notify_id.clone()),
            (
                "fund_bill_list",
                format!("[{{\"amount\":\"{total}\",\"fundChannel\":\"ALIPAYACCOUNT\"}}]"),
            ),
            ("notify_type", "trade_status_sync".into()),
            ("trade_status", trade.status.as_str().into()),
            ("receipt_amount", total.clone()),
            ("buyer_pay_amount", total.clone()),
            ("app_id", order.app_id.clone()),
            ("auth_app_id", order.app_id.clone()),
            ("notify_time", beijing(now)),
            ("point_amount", "0.00".into()),
            ("version", "1.0".into()),
            ("out_trade_no", order.out_trade_no.clone()),
            ("total_amount", total.clone()),
            ("trade_no", trade.trade_no.clone()),
            ("sign_type", "RSA2".into()),
        ];
        if let Some(paid_at) = trade.paid_at {
            fields.push(("gmt_payment", beijing(paid_at)));
        }
        if let Some(request_no) = refund_request_no {
            fields.push(("refund_fee", yuan(trade.refunded())));
            fields.push(("gmt_refund", beijing(now)));
            fields.push(("out_biz_no", request_no.to_owned()));
        }
        let content = sign_string(
            fields.iter().map(|(k, v)| (*k, v.as_str())),
            Signed::Notification,
        );
        let sign = self
            .signer
            .sign_base64(content.as_bytes())
            .unwrap_or_default();
        fields.push(("sign", sign));
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &fields {
            form.append_pair(key, value);
        }
        let body = form.finish();
        let index = {
            let mut inner = self.lock();
            inner.notifications.push(SentNotification {
                notify_id,
                out_trade_no: order.out_trade_no.clone(),
                body: body.clone(),
                attempts: 0,
                acknowledged: false,
            });
            inner.notifications.len() - 1
        };
        let this = Arc::clone(self);
        tokio::spawn(async move { this.deliver(index, url, body).await });
    }

    async fn deliver(self: Arc<Self>, index: usize, url: String, body: String) {
        let request = HttpRequest {
            method: HttpMethod::Post,
            url,
            headers: vec![("content-type".into(), FORM_CONTENT_TYPE.into())],
            body: body.into_bytes(),
        };
        let waits = std::iter::once(0).chain(NOTIFY_SCHEDULE_SECS.iter().map(|s| s * 1000));
        for wait_ms in waits {
            tokio::time::sleep(Duration::from_millis(
                wait_ms / u64::from(self.time_divisor),
            ))
            .await;
            let acknowledged = matches!(
                self.client.send(&request).await,
                Ok(response) if response.status == 200 && response.body == b"success"
            );
            let mut inner = self.lock();
            if let Some(sent) = inner.notifications.get_mut(index) {
                sent.attempts += 1;
                sent.acknowledged |= acknowledged;
            }
            if acknowledged {
                return;
            }
        }
    }
}

async fn control_pay(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.scan(&order, true))
}

async fn control_scan(
    State(sb): State<Shared>,
    axum::Json(order): axum::Json<ControlOrder>,
) -> Response {
    control_reply(sb.scan(&order, false))
}

async fn cashier_pay(
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
fn order_by_code(sb: &Sandbox, code: &str) -> Option<Order> {
    sb.lock()
        .orders
        .values()
        .find(|o| !o.qr_code.is_empty() && o.qr_code == code)
        .cloned()
}

/// `GET /sandbox/wallet?code=`: the phone scanned a precreate QR code.
async fn wallet_scan(State(sb): State<Shared>, Query(scan): Query<super::WalletScan>) -> Response {
    match order_by_code(&sb, &scan.code) {
        Some(order) => super::wallet_page("支付宝 Alipay", &order.subject, order.total, &scan.code),
        None => (StatusCode::NOT_FOUND, "unknown QR code").into_response(),
    }
}

/// `POST /sandbox/wallet`: the shopper confirmed; pay and notify.
async fn wallet_pay(
    State(sb): State<Shared>,
    axum::Form(scan): axum::Form<super::WalletScan>,
) -> Response {
    let Some(order) = order_by_code(&sb, &scan.code) else {
        return (StatusCode::NOT_FOUND, "unknown QR code").into_response();
    };
    let control = ControlOrder {
        out_trade_no: order.out_trade_no,
        app_id: Some(order.app_id),
        notify: true,
    };
    super::wallet_paid(sb.scan(&control, true))
}

/// How many provider calls the sandbox has received (every one, faulted or not).
async fn control_stats(State(sb): State<Shared>) -> Response {
    axum::Json(json!({"calls": sb.lock().calls})).into_response()
}

async fn control_fault(
    State(sb): State<Shared>,
    axum::Json(fault): axum::Json<FaultBody>,
) -> StatusCode {
    sb.lock().fault.arm(&fault);
    StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize)]
struct NotificationQuery {
    out_trade_no: String,
}

async fn control_notifications(
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
async fn control_resend(
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
async fn control_forge(
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

impl Sandbox {
    /// The lines of one app's trade bill for a Beijing day: trades completed and refunds made
    /// on it, in time order.
    fn bill_entries(&self, app_id: &str, day: time::Date) -> Vec<statements::AlipayBillEntry> {
        let inner = self.lock();
        let mut entries = Vec::new();
        for order in inner.orders.values().filter(|o| o.app_id == app_id) {
            let Some(trade) = &order.trade else { continue };
            let Some(paid_at) = trade.paid_at else {
                continue;
            };
            if beijing_day(paid_at) == day {
                entries.push(statements::AlipayBillEntry {
                    trade_no: trade.trade_no.clone(),
                    out_trade_no: order.out_trade_no.clone(),
                    refund_request_no: None,
                    subject: order.subject.clone(),
                    created_at: order.created_at,
                    finished_at: paid_at,
                    amount: order.total,
                    fee: statements::alipay_fee(order.total),
                });
            }
            for (request_no, amount, at) in &trade.refunds {
                if beijing_day(*at) == day {
                    entries.push(statements::AlipayBillEntry {
                        trade_no: trade.trade_no.clone(),
                        out_trade_no: order.out_trade_no.clone(),
                        refund_request_no: Some(request_no.clone()),
                        subject: order.subject.clone(),
                        created_at: order.created_at,
                        finished_at: *at,
                        amount: *amount,
                        fee: statements::alipay_fee(*amount),
                    });
                }
            }
        }
        entries.sort_by_key(|e| e.finished_at);
        entries
    }

    /// `alipay.data.dataservice.bill.downloadurl.query`: daily `trade` bills of days before
    /// today (Beijing); "参数不合法" for today or later (A.11); `isp.bill_not_exist` for a day
    /// without trades (sandbox choice: the code Alipay gives when no bill exists).
    fn bill_link(
        &self,
        app_id: &str,
        bill_type: Option<&str>,
        bill_date: Option<&str>,
        host: &str,
        now: OffsetDateTime,
    ) -> Value {
        if bill_type != Some("trade") {
            // Sandbox choice: only the acquiring (`trade`) bill is simulated.
            return business("isv.invalid-arguments", "参数不合法: bill_type");
        }
        let Some(day) = bill_date.and_then(moongate_contract::statement::parse_day) else {
            return business("isv.invalid-arguments", "参数不合法: bill_date");
        };
        // Alipay has no "still generating" answer; only today and later are refused.
        let (today, _) = self.lock().bills.today(now);
        if day >= today {
            return business("isv.invalid-arguments", "参数不合法");
        }
        let entries = self.bill_entries(app_id, day);
        if entries.is_empty() {
            return business("isp.bill_not_exist", "账单不存在");
        }
        let Ok(zip) = statements::alipay_trade_bill_zip(&self.seller_id, day, &entries, now) else {
            return business("isp.unknow-error", "系统繁忙");
        };
        let name = statements::alipay_zip_name(&self.seller_id, day);
        let token = crate::text::new_id("bill");
        let url = format!(
            "http://{host}/downloadBillFile.resource?bizType=trade&userId={}0156&fileType=csv.zip&bizDates={}&downloadFileName={name}&fileId=%2Ftrade%2F{}0156%2F{}&timestamp={}&token={token}",
            self.seller_id,
            statements::compact_day(day),
            self.seller_id,
            statements::compact_day(day),
            now.unix_timestamp() * 1000,
        );
        self.lock().bills.issue(
            token,
            statements::IssuedBill {
                at: now,
                label: name,
                bytes: zip,
            },
            BILL_LINK_SECS,
        );
        json!({"code": "10000", "msg": "Success", "bill_download_url": url})
    }
}

fn beijing_day(at: OffsetDateTime) -> time::Date {
    moongate_contract::statement::beijing_day(at)
}

#[derive(Debug, Deserialize)]
struct BillQuery {
    token: String,
}

/// The bill zip; after 30 s the link answers with a page instead (as Alipay's does).
async fn download_bill(State(sb): State<Shared>, Query(query): Query<BillQuery>) -> Response {
    let now = OffsetDateTime::now_utc();
    let found = sb
        .lock()
        .bills
        .fetch(&query.token, now, BILL_LINK_SECS, |_| true);
    match found {
        Some(statements::IssuedBill {
            label: name,
            bytes: zip,
            ..
        }) => {
            let mut response = (StatusCode::OK, zip).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/oct-stream"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename={name}")) {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        _ => Html("<html><body>下载超时，请重新下载</body></html>").into_response(),
    }
}

async fn control_statement_clock(
    State(sb): State<Shared>,
    axum::Json(clock): axum::Json<statements::StatementClock>,
) -> Response {
    match clock.day() {
        Ok(day) => {
            // `tamper_next` is the WeChat Pay sandbox's (it checks a SHA-1); ignored here.
            sb.lock().bills.set_clock(day, false);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// Alipay's published payment-code shape (china-wallets.md section E): 16-24 digits starting
/// 25-30. Written here from the rule, not taken from the adapter.
fn is_alipay_code(code: &str) -> bool {
    (16..=24).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_digit())
        && code
            .get(..2)
            .and_then(|p| p.parse::<u8>().ok())
            .is_some_and(|p| (25..=30).contains(&p))
}
