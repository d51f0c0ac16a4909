//! WeChat sandbox: the official account's web OAuth (网页授权), written from WeChat's published
//! rules, not from Moongate's adapter. `GET /connect/oauth2/authorize` (WeChat's page, which
//! only works inside WeChat) checks the app, `response_type=code`, the scope and that
//! `redirect_uri`'s host is one of the app's registered OAuth domains (网页授权域名), then
//! sends the browser back with a single-use `code` (five minutes) and the `state`; with
//! `snsapi_base` it asks nothing. `GET /sns/oauth2/access_token` exchanges the code, with the
//! app's secret, for the payer's `openid` under that app.
//!
//! Sandbox choices: the WeChat user is `x-sandbox-wechat-user` (a header a test's in-app
//! browser sends) or `shopper`; their openid under an app is a hash of both, so one user has
//! one openid per app and different apps see different ones, as WeChat does.

use super::*;
use sha2::{Digest, Sha256};

/// How long a code may wait for its exchange.
const CODE_LIFE: time::Duration = time::Duration::minutes(5);

/// An official account (公众号) the sandbox knows: its app id, secret and OAuth domains.
#[derive(Clone, Debug)]
pub struct SandboxOfficialAccount {
    /// `appid`.
    pub appid: String,
    /// AppSecret.
    pub secret: String,
    /// Hosts (`host` or `host:port`) its `redirect_uri` may name.
    pub oauth_domains: Vec<String>,
}

/// A code handed to a `redirect_uri`.
#[derive(Clone, Debug)]
pub(super) struct Code {
    appid: String,
    openid: String,
    issued_at: OffsetDateTime,
}

/// The openid of a WeChat user under an app.
pub fn openid_of(appid: &str, user: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(format!("{appid}\n{user}").as_bytes());
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    format!("o{}", text.get(..27).unwrap_or_default())
}

#[derive(Debug, Deserialize)]
pub(super) struct Authorize {
    appid: Option<String>,
    redirect_uri: Option<String>,
    response_type: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

fn page(status: StatusCode, text: &str) -> Response {
    crate::sandbox::notice_page("微信网页授权 (sandbox)", status, text)
}

/// `GET /connect/oauth2/authorize`.
pub(super) async fn authorize(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<Authorize>,
) -> Response {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !agent.contains("MicroMessenger") {
        return page(
            StatusCode::OK,
            "请在微信客户端打开链接 (open this link in WeChat)",
        );
    }
    let Some(app) = query
        .appid
        .as_deref()
        .and_then(|a| sb.official_accounts.get(a))
    else {
        return page(
            StatusCode::BAD_REQUEST,
            "appid 参数错误 (10016: unknown appid)",
        );
    };
    if query.response_type.as_deref() != Some("code") {
        return page(
            StatusCode::BAD_REQUEST,
            "response_type 参数错误 (must be code)",
        );
    }
    if !matches!(
        query.scope.as_deref(),
        Some("snsapi_base" | "snsapi_userinfo")
    ) {
        return page(
            StatusCode::BAD_REQUEST,
            "scope 参数错误或没有 scope 权限 (10005)",
        );
    }
    let state = query.state.unwrap_or_default();
    if state.len() > 128
        || !state
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return page(
            StatusCode::BAD_REQUEST,
            "state 参数错误 (a-zA-Z0-9, up to 128 bytes)",
        );
    }
    let redirect = query.redirect_uri.unwrap_or_default();
    if !crate::sandbox::host_of(&redirect).is_some_and(|h| app.oauth_domains.contains(&h)) {
        return page(
            StatusCode::BAD_REQUEST,
            "redirect_uri 域名与后台配置不一致 (10003: not a registered OAuth domain)",
        );
    }
    let user = headers
        .get("x-sandbox-wechat-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("shopper");
    let code = random_alnum(32);
    sb.lock().oauth_codes.insert(
        code.clone(),
        Code {
            appid: app.appid.clone(),
            openid: openid_of(&app.appid, user),
            issued_at: OffsetDateTime::now_utc(),
        },
    );
    crate::sandbox::redirect_back(&redirect, &[("code", &code), ("state", &state)])
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenQuery {
    appid: Option<String>,
    secret: Option<String>,
    code: Option<String>,
    grant_type: Option<String>,
}

fn error(code: i64, message: &str) -> Response {
    axum::Json(json!({"errcode": code, "errmsg": message})).into_response()
}

/// `GET /sns/oauth2/access_token`.
pub(super) async fn access_token(
    State(sb): State<Shared>,
    Query(query): Query<TokenQuery>,
) -> Response {
    if query.grant_type.as_deref() != Some("authorization_code") {
        return error(40002, "invalid grant_type");
    }
    let Some(app) = query
        .appid
        .as_deref()
        .and_then(|a| sb.official_accounts.get(a))
    else {
        return error(40013, "invalid appid");
    };
    if query.secret.as_deref() != Some(app.secret.as_str()) {
        return error(40125, "invalid appsecret");
    }
    let code = query.code.unwrap_or_default();
    let mut inner = sb.lock();
    if inner.oauth_spent.contains(&code) {
        return error(40163, "code been used");
    }
    let Some(found) = inner.oauth_codes.remove(&code) else {
        return error(40029, "invalid code");
    };
    inner.oauth_spent.insert(code);
    if found.appid != app.appid || OffsetDateTime::now_utc() - found.issued_at > CODE_LIFE {
        return error(40029, "invalid code");
    }
    axum::Json(json!({
        "access_token": random_alnum(64), "expires_in": 7200, "refresh_token": random_alnum(64),
        "openid": found.openid, "scope": "snsapi_base",
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BridgePay {
    app_id: String,
    time_stamp: String,
    nonce_str: String,
    package: String,
    sign_type: String,
    pay_sign: String,
}

/// `GET /sandbox/jsapi?appId&timeStamp&nonceStr&package&signType&paySign`: WeChat's in-app
/// payment sheet, for a test's stand-in of `WeixinJSBridge.invoke('getBrandWCPayRequest', …)`
/// (it opens this page as the sheet and calls the page's callback once the sheet closes). It
/// checks what WeChat checks: the order the `prepay_id` names is a JSAPI order under `appId`;
/// the pay-sign verifies with the merchant's key over `appId\ntimeStamp\nnonceStr\npackage\n`
/// (RSA); the WeChat user paying (`x-sandbox-wechat-user`, default `shopper`) is the order's
/// payer (an openid is one user's under one app); an order already paid is refused. Then it
/// pays, notifies, and closes.
pub(super) async fn bridge_pay(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Query(call): Query<BridgePay>,
) -> Response {
    let refuse = |why: &str| page(StatusCode::BAD_REQUEST, why);
    let Some(prepay_id) = call.package.strip_prefix("prepay_id=") else {
        return refuse("package 参数错误 (prepay_id=…)");
    };
    let found = sb
        .lock()
        .orders
        .values()
        .find(|o| o.prepay_id == prepay_id && o.trade_type == "JSAPI")
        .cloned();
    let Some(order) = found else {
        return refuse("prepay_id 不存在 (no JSAPI order)");
    };
    let payer_app = order
        .sub
        .as_ref()
        .filter(|s| s.sub_openid)
        .and_then(|s| s.sub_appid.clone())
        .unwrap_or_else(|| order.appid.clone());
    if call.app_id != payer_app {
        return refuse("appId 与下单 appid 不一致");
    }
    if call.sign_type != "RSA" {
        return refuse("signType 参数错误 (RSA)");
    }
    let message = format!(
        "{}\n{}\n{}\n{}\n",
        call.app_id, call.time_stamp, call.nonce_str, call.package
    );
    let verified = sb
        .merchants
        .get(&order.mchid)
        .is_some_and(|m| m.verifier.verify_base64(message.as_bytes(), &call.pay_sign));
    if !verified {
        return refuse("支付验证签名失败 (paySign does not verify)");
    }
    let user = headers
        .get("x-sandbox-wechat-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("shopper");
    if openid_of(&payer_app, user) != order.openid {
        return refuse("当前用户不是下单用户 (another WeChat user's order)");
    }
    let control = super::control::ControlOrder {
        mchid: Some(order.owner().to_owned()),
        out_trade_no: order.out_trade_no.clone(),
        notify: true,
    };
    if order.state.paid() {
        return refuse("该订单已支付 (already paid)");
    }
    if let Err((status, message)) = sb.pay(&control) {
        return (status, message).into_response();
    }
    // The sheet closes itself; the page's callback then runs.
    Html(
        "<!doctype html><meta charset=utf-8><title>支付成功</title><p>支付成功 Paid.</p>\
         <script>window.close();</script>",
    )
    .into_response()
}
