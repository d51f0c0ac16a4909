//! Alipay sandbox: who pays inside the Alipay app, written from Alipay's published rules, not
//! from Moongate's adapter. The user authorisation page (`GET /oauth2/publicAppAuthorize.htm`,
//! which works only inside the Alipay app) checks the app, the scope (`auth_base` or
//! `auth_user`), the `state` and that `redirect_uri`'s host is the app's authorisation
//! callback domain (授权回调地址), then sends the browser back with a single-use `auth_code`,
//! `app_id`, `source=alipay_wallet`, `scope` and the `state`; with `auth_base` it asks nothing.
//! `alipay.system.oauth.token` (`grant_type=authorization_code`, `code`, as application
//! parameters of their own) exchanges the code, for the app it was issued to (an ISV calling
//! with the merchant's `app_auth_token` counts as the merchant's app), for the payer's id
//! under that app. `alipay.trade.create` with `product_code=JSAPI_PAY` and that id creates a
//! trade waiting for the payer, and the in-app payment sheet (`/sandbox/tradepay`, a stand-in
//! for `AlipayJSBridge.call('tradePay')`) pays it when the payer is the trade's buyer.
//!
//! Sandbox choices: a code lives three minutes (Alipay: three minutes to a day); the Alipay
//! user is `x-sandbox-alipay-user` (a header a test's in-app browser may send) or `shopper`;
//! apps in certificate mode stand for the apps created since the OpenID change and name the
//! payer by an `open_id` (a hash of app and user, so one user has one per app), the others by
//! a `2088…` user id (a hash of the user alone), and a JSAPI trade may name any well-formed
//! user id but only an open id the app has learned; a merchant app an ISV serves uses its
//! ISV's callback domains.

use super::*;
use crate::text::random_alnum;
use sha2::{Digest, Sha256};

/// How long an `auth_code` may wait for its exchange.
const CODE_LIFE: time::Duration = time::Duration::minutes(3);

/// An `auth_code` handed to a `redirect_uri`.
#[derive(Clone, Debug)]
pub(super) struct UserCode {
    app_id: String,
    buyer: String,
    issued_at: OffsetDateTime,
}

/// Issued and spent user authorisation codes.
#[derive(Debug, Default)]
pub(super) struct UserCodes {
    codes: HashMap<String, UserCode>,
    spent: std::collections::HashSet<String>,
}

/// The user of an in-app request.
fn alipay_user(headers: &HeaderMap) -> String {
    headers
        .get("x-sandbox-alipay-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("shopper")
        .to_owned()
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl Sandbox {
    /// True for apps of the OpenID generation (see [`Sandbox::buyer_field`]).
    pub(super) fn migrated(&self, app_id: &str) -> bool {
        self.apps
            .get(app_id)
            .is_some_and(|app| app.app_cert_sn.is_some())
    }

    /// The id of Alipay user `user` under `app_id`: an `open_id` or a `2088…` user id.
    pub(super) fn buyer_of(&self, app_id: &str, user: &str) -> String {
        if self.migrated(app_id) {
            use base64::Engine;
            let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(digest(&format!("{app_id}\n{user}")))
                .replace(['-', '_'], "0");
            format!("0{}", text.get(..46).unwrap_or_default())
        } else {
            let number = digest(user)
                .iter()
                .take(6)
                .fold(0_u64, |n, b| n * 256 + u64::from(*b))
                % 1_000_000_000_000;
            format!("2088{number:012}")
        }
    }

    /// The hosts `app_id`'s `redirect_uri` may name: its own callback domains, or for a
    /// merchant app an ISV serves, its ISV's.
    fn callback_domains(&self, app_id: &str) -> Vec<String> {
        let own = self
            .callback_domains
            .get(app_id)
            .cloned()
            .unwrap_or_default();
        if !own.is_empty() {
            return own;
        }
        let isvs: Vec<String> = self
            .lock()
            .grants
            .tokens
            .values()
            .filter(|g| g.merchant == app_id)
            .map(|g| g.isv.clone())
            .collect();
        isvs.iter()
            .flat_map(|isv| self.callback_domains.get(isv).cloned().unwrap_or_default())
            .collect()
    }

    /// `alipay.system.oauth.token` for `app_id` (the merchant's app, an ISV's call resolved):
    /// the node name and the node.
    pub(super) fn oauth_token(
        &self,
        app_id: &str,
        grant_type: Option<&str>,
        code: Option<&str>,
        now: OffsetDateTime,
    ) -> (&'static str, Value) {
        let refuse = |sub_code: &str, sub_msg: &str| {
            (
                "error_response",
                err("40002", "Invalid Arguments", sub_code, sub_msg),
            )
        };
        match grant_type {
            Some("authorization_code") => {}
            // Sandbox choice: it hands out no usable refresh tokens (auth_base needs none).
            Some("refresh_token") => return refuse("isv.refresh-token-invalid", "刷新令牌无效"),
            _ => return refuse("isv.invalid-grant-type", "grant_type 取值错误"),
        }
        let code = code.unwrap_or_default();
        let mut inner = self.lock();
        let issued = inner.user_codes.codes.remove(code);
        let fresh = !inner.user_codes.spent.contains(code);
        inner.user_codes.spent.insert(code.to_owned());
        let Some(issued) = issued.filter(|c| {
            fresh && c.app_id == app_id && now - c.issued_at <= CODE_LIFE && !code.is_empty()
        }) else {
            return refuse("isv.code-invalid", "授权码code无效");
        };
        let id_field = if self.migrated(app_id) {
            "open_id"
        } else {
            "user_id"
        };
        (
            "alipay_system_oauth_token_response",
            json!({
                id_field: issued.buyer,
                "access_token": format!("authbseB{}", random_alnum(32)),
                "expires_in": 1_296_000, "re_expires_in": 2_592_000,
                "refresh_token": format!("authbseB{}", random_alnum(32)),
                "auth_start": beijing_time(now).unwrap_or_default(),
            }),
        )
    }

    /// How an order's buyer is named (the field and the id): a JSAPI trade's own buyer, else
    /// the sandbox's stand-in payer ([`Sandbox::buyer_field`]).
    pub(super) fn buyer_named(
        &self,
        order: &Order,
        user_field: &'static str,
    ) -> (&'static str, String) {
        match &order.buyer {
            Some(buyer) if self.migrated(&order.auth_app_id) => ("buyer_open_id", buyer.clone()),
            Some(buyer) => (user_field, buyer.clone()),
            None => {
                let (field, id) = self.buyer_field(&order.app_id, user_field);
                (field, id.to_owned())
            }
        }
    }

    /// The buyer field an `alipay.trade.create` names, if it is one of `app_id`'s payers in
    /// the generation the app gets.
    pub(super) fn trade_create_buyer(
        &self,
        app_id: &str,
        biz: &serde_json::Map<String, Value>,
    ) -> Result<String, Value> {
        let field = |key: &str| {
            biz.get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let (expected, other) = if self.migrated(app_id) {
            ("buyer_open_id", "buyer_id")
        } else {
            ("buyer_id", "buyer_open_id")
        };
        if field(other).is_some() && field(expected).is_none() {
            return Err(business(
                "ACQ.INVALID_PARAMETER",
                &format!("参数无效: 该应用须传 {expected}，不能传 {other}"),
            ));
        }
        let Some(buyer) = field(expected) else {
            return Err(business(
                "ACQ.INVALID_PARAMETER",
                &format!("参数无效: JSAPI_PAY 须传 {expected}"),
            ));
        };
        // A user id is the user's everywhere; an open id exists only for the app a user
        // authorised (sandbox choice: Alipay's code for a foreign one is not published).
        let known = if expected == "buyer_id" {
            buyer.len() == 16
                && buyer.starts_with("2088")
                && buyer.bytes().all(|b| b.is_ascii_digit())
        } else {
            self.lock()
                .payers
                .contains(&(app_id.to_owned(), buyer.to_owned()))
        };
        if !known {
            return Err(business(
                "ACQ.INVALID_PARAMETER",
                &format!("参数无效: {expected}"),
            ));
        }
        Ok(buyer.to_owned())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct UserAuthorize {
    app_id: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

fn page(status: StatusCode, text: &str) -> Response {
    crate::sandbox::notice_page("支付宝 用户授权 (sandbox)", status, text)
}

/// `GET /oauth2/publicAppAuthorize.htm?app_id=&scope=&redirect_uri=&state=`.
pub(super) async fn public_app_authorize(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<UserAuthorize>,
) -> Response {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !agent.contains("AlipayClient") {
        return page(
            StatusCode::OK,
            "请在支付宝客户端打开 (open this link in Alipay)",
        );
    }
    let app_id = query.app_id.unwrap_or_default();
    let served = sb
        .lock()
        .grants
        .tokens
        .values()
        .any(|g| g.merchant == app_id);
    if !(sb.apps.contains_key(&app_id) || served) {
        return page(StatusCode::BAD_REQUEST, "应用不存在 (unknown app_id)");
    }
    let scope = query.scope.unwrap_or_default();
    if !matches!(scope.as_str(), "auth_base" | "auth_user") {
        return page(
            StatusCode::BAD_REQUEST,
            "scope 参数错误 (auth_base or auth_user)",
        );
    }
    let state = query.state.unwrap_or_default();
    if state.len() > 100 {
        return page(
            StatusCode::BAD_REQUEST,
            "state 参数错误 (up to 100 characters)",
        );
    }
    let redirect = query.redirect_uri.unwrap_or_default();
    if !crate::sandbox::host_of(&redirect)
        .is_some_and(|h| sb.callback_domains(&app_id).contains(&h))
    {
        return page(
            StatusCode::BAD_REQUEST,
            "redirect_uri 与应用授权回调地址不一致 (not the app's callback domain)",
        );
    }
    let buyer = sb.buyer_of(&app_id, &alipay_user(&headers));
    let code = random_alnum(32);
    {
        let mut inner = sb.lock();
        inner.payers.insert((app_id.clone(), buyer.clone()));
        inner.user_codes.codes.insert(
            code.clone(),
            UserCode {
                app_id: app_id.clone(),
                buyer,
                issued_at: OffsetDateTime::now_utc(),
            },
        );
    }
    let mut back = vec![
        ("app_id", app_id.as_str()),
        ("source", "alipay_wallet"),
        ("scope", scope.as_str()),
        ("auth_code", code.as_str()),
    ];
    if !state.is_empty() {
        back.push(("state", state.as_str()));
    }
    crate::sandbox::redirect_back(&redirect, &back)
}

#[derive(Debug, Deserialize)]
pub(super) struct TradePay {
    #[serde(rename = "tradeNO")]
    trade_no: Option<String>,
}

/// `GET /sandbox/tradepay?tradeNO=`: the Alipay app's payment sheet, for a test's stand-in of
/// `AlipayJSBridge.call('tradePay', {tradeNO}, …)` (it opens this page as the sheet and calls
/// the page's callback once the sheet closes). It checks what Alipay checks: the trade is a
/// JSAPI trade waiting for payment, not expired, and the Alipay user paying is its buyer.
/// Then it pays, notifies, and closes.
pub(super) async fn trade_pay_sheet(
    State(sb): State<Shared>,
    headers: HeaderMap,
    Query(call): Query<TradePay>,
) -> Response {
    let refuse = |why: &str| page(StatusCode::BAD_REQUEST, why);
    let trade_no = call.trade_no.unwrap_or_default();
    let found = sb
        .lock()
        .orders
        .values()
        .find(|o| o.trade.as_ref().is_some_and(|t| t.trade_no == trade_no))
        .cloned();
    let Some(order) = found.filter(|o| o.buyer.is_some()) else {
        return refuse("交易不存在 (no JSAPI trade with this tradeNO)");
    };
    if order.buyer.as_deref()
        != Some(
            sb.buyer_of(&order.auth_app_id, &alipay_user(&headers))
                .as_str(),
        )
    {
        return refuse("当前用户不是交易买家 (another Alipay user's trade)");
    }
    let control = ControlOrder {
        out_trade_no: order.out_trade_no.clone(),
        app_id: Some(order.auth_app_id.clone()),
        notify: true,
    };
    if let Err((status, message)) = sb.scan(&control, true) {
        return (status, message).into_response();
    }
    Html(
        "<!doctype html><meta charset=utf-8><title>支付成功</title><p>支付成功 Paid.</p>\
         <script>window.close();</script>",
    )
    .into_response()
}
