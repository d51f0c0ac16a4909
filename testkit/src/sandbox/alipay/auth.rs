//! Alipay sandbox: application authorisation (应用授权, more-wallets.md §7). A merchant app
//! authorises an ISV app on the `appToAppAuth` page, which sends the browser back to the
//! ISV's `redirect_uri` with a single-use `app_auth_code`; the ISV exchanges it with
//! `alipay.open.auth.token.app` for an `app_auth_token` and an `app_refresh_token`, refreshes
//! the pair with the latter, and every call it makes for the merchant carries the token.
//!
//! Sandbox choices (Alipay's own values are not all published): a code lives 10 minutes; a
//! token a year (`expires_in` 31,536,000 s), its refresh token a year and a week; a refresh
//! ends the old token at once; a refresh token that is unknown or spent answers
//! `40002 isv.refresh-token-invalid`; an unknown `grant_type` `40002 isv.invalid-grant-type`.

use super::*;
use crate::text::random_alnum;

/// How long an `app_auth_code` may wait for its exchange.
const CODE_LIFE: time::Duration = time::Duration::minutes(10);
/// `expires_in` and `re_expires_in` of a new token, seconds.
const TOKEN_LIFE_SECS: i64 = 31_536_000;
const REFRESH_LIFE_SECS: i64 = 32_140_800;

/// One merchant's authorisation of one ISV app.
#[derive(Clone, Debug)]
pub(super) struct Grant {
    pub(super) isv: String,
    pub(super) merchant: String,
    pub(super) refresh_token: String,
    pub(super) expires_at: OffsetDateTime,
    pub(super) refresh_expires_at: OffsetDateTime,
}

/// An `app_auth_code` handed to the ISV's `redirect_uri`.
#[derive(Clone, Debug)]
pub(super) struct Code {
    isv: String,
    merchant: String,
    issued_at: OffsetDateTime,
}

/// The grants and codes of the sandbox.
#[derive(Debug, Default)]
pub(super) struct Grants {
    /// `app_auth_token` → its grant.
    pub(super) tokens: HashMap<String, Grant>,
    /// Codes not yet exchanged.
    codes: HashMap<String, Code>,
}

impl Grants {
    /// Tokens configured as already granted (they do not lapse within a test's life).
    pub(super) fn configured(authorisations: Vec<(String, String, String)>) -> Grants {
        let far = OffsetDateTime::now_utc() + time::Duration::days(365);
        Grants {
            tokens: authorisations
                .into_iter()
                .map(|(token, isv, merchant)| {
                    let refresh_token = format!("{token}-refresh");
                    (
                        token,
                        Grant {
                            isv,
                            merchant,
                            refresh_token,
                            expires_at: far,
                            refresh_expires_at: far,
                        },
                    )
                })
                .collect(),
            codes: HashMap::new(),
        }
    }
}

/// Why a token does not let `caller` act: (`code`, `msg`, `sub_code`, `sub_msg`).
type TokenRefusal = (&'static str, &'static str, &'static str, &'static str);

impl Sandbox {
    /// The merchant app `token` lets the ISV app `caller` act for.
    pub(super) fn authorised_merchant(
        &self,
        token: &str,
        caller: &str,
        now: OffsetDateTime,
    ) -> Result<String, TokenRefusal> {
        let inner = self.lock();
        match inner.grants.tokens.get(token) {
            Some(grant) if grant.isv == caller && grant.expires_at > now => {
                Ok(grant.merchant.clone())
            }
            Some(grant) if grant.isv == caller => Err((
                "20001",
                "Insufficient Token Permissions",
                "aop.app-auth-token-time-out",
                "应用授权令牌已过期",
            )),
            _ => Err((
                "20001",
                "Insufficient Token Permissions",
                "aop.invalid-app-auth-token",
                "无效的应用授权令牌",
            )),
        }
    }

    fn issue(&self, isv: &str, merchant: &str, now: OffsetDateTime) -> (String, Grant) {
        let token = format!("202612BB{}", random_alnum(32));
        let grant = Grant {
            isv: isv.to_owned(),
            merchant: merchant.to_owned(),
            refresh_token: format!("202612BB{}", random_alnum(32)),
            expires_at: now + time::Duration::seconds(TOKEN_LIFE_SECS),
            refresh_expires_at: now + time::Duration::seconds(REFRESH_LIFE_SECS),
        };
        (token, grant)
    }

    /// `alipay.open.auth.token.app`, called by the ISV app `caller` for itself.
    pub(super) fn token_app(
        &self,
        caller: &str,
        biz: &serde_json::Map<String, Value>,
        now: OffsetDateTime,
    ) -> Value {
        let field = |key: &str| {
            biz.get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
        };
        let mut inner = self.lock();
        let (token, grant) = match field("grant_type") {
            Some("authorization_code") => {
                let code = field("code").unwrap_or_default();
                let valid = inner
                    .grants
                    .codes
                    .get(code)
                    .filter(|c| c.isv == caller && now - c.issued_at <= CODE_LIFE)
                    .cloned();
                // Single use: an exchanged, expired or foreign code is gone either way.
                inner.grants.codes.remove(code);
                let Some(code) = valid else {
                    return err(
                        "40002",
                        "Invalid Arguments",
                        "isv.code-invalid",
                        "授权码code无效",
                    );
                };
                self.issue(&code.isv, &code.merchant, now)
            }
            Some("refresh_token") => {
                let refresh = field("refresh_token").unwrap_or_default();
                let old = inner
                    .grants
                    .tokens
                    .iter()
                    .find(|(_, g)| {
                        g.isv == caller && g.refresh_token == refresh && g.refresh_expires_at > now
                    })
                    .map(|(token, g)| (token.clone(), g.merchant.clone()));
                let Some((old, merchant)) = old else {
                    return err(
                        "40002",
                        "Invalid Arguments",
                        "isv.refresh-token-invalid",
                        "刷新令牌无效",
                    );
                };
                inner.grants.tokens.remove(&old);
                self.issue(caller, &merchant, now)
            }
            _ => {
                return err(
                    "40002",
                    "Invalid Arguments",
                    "isv.invalid-grant-type",
                    "grant_type 取值错误",
                );
            }
        };
        let answer = json!({
            "code": "10000", "msg": "Success",
            "tokens": [{
                "app_auth_token": token, "app_refresh_token": grant.refresh_token,
                "auth_app_id": grant.merchant, "user_id": "2088102177846875",
                "expires_in": TOKEN_LIFE_SECS, "re_expires_in": REFRESH_LIFE_SECS,
            }],
        });
        inner.grants.tokens.insert(token, grant);
        answer
    }

    /// The merchant revokes its authorisations (every ISV's): their tokens and refresh
    /// tokens stop working. How many were revoked.
    pub(super) fn revoke(&self, merchant: &str) -> usize {
        let mut inner = self.lock();
        let before = inner.grants.tokens.len();
        inner.grants.tokens.retain(|_, g| g.merchant != merchant);
        before - inner.grants.tokens.len()
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AuthPage {
    app_id: Option<String>,
    redirect_uri: Option<String>,
    #[serde(default)]
    state: Option<String>,
    /// The merchant's own app, chosen on the page (the shopper of this page is the merchant).
    #[serde(default)]
    merchant_app_id: Option<String>,
}

fn page(status: StatusCode, body: &str) -> Response {
    (
        status,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>支付宝 应用授权 (sandbox)</title>{body}"
        )),
    )
        .into_response()
}

/// The checks of both halves of the page: a known ISV app and a redirect it may use; the
/// refusal is the page's text.
fn checked(sb: &Sandbox, query: &AuthPage) -> Result<(String, String), &'static str> {
    let isv = query.app_id.clone().unwrap_or_default();
    if !sb.apps.contains_key(&isv) {
        return Err("<p>应用不存在 (unknown app_id)</p>");
    }
    // Sandbox choice: the redirect must be https, or plain http on this machine (Alipay
    // checks it against the app's configured 授权回调地址).
    let redirect = query.redirect_uri.clone().unwrap_or_default();
    if moongate_contract::http::check_base_url(&redirect).is_err() {
        return Err("<p>redirect_uri 不合法 (must be https, or http on loopback)</p>");
    }
    Ok((isv, redirect))
}

/// `GET /oauth2/appToAppAuth.htm?app_id=&redirect_uri=&state=`: the merchant's consent page.
pub(super) async fn app_to_app_auth_page(
    State(sb): State<Shared>,
    Query(query): Query<AuthPage>,
) -> Response {
    let (isv, redirect) = match checked(&sb, &query) {
        Ok(checked) => checked,
        Err(refused) => return page(StatusCode::BAD_REQUEST, refused),
    };
    page(
        StatusCode::OK,
        &format!(
            "<h1>授权给应用 {isv}</h1><p>Authorise app {isv} to act for your app.</p>\
             <form method=post action=\"/oauth2/appToAppAuth.htm\">\
             <input type=hidden name=app_id value=\"{}\"><input type=hidden name=redirect_uri value=\"{}\">\
             <input type=hidden name=state value=\"{}\">\
             <label>Your app id <input name=merchant_app_id></label> <button type=submit>确认授权 Authorise</button></form>",
            html_escape(&isv),
            html_escape(&redirect),
            html_escape(query.state.as_deref().unwrap_or_default())
        ),
    )
}

/// `POST /oauth2/appToAppAuth.htm`: the merchant consented; back to the ISV's `redirect_uri`
/// with `app_id`, `source`, `app_auth_code` and `state`.
pub(super) async fn app_to_app_auth_consent(
    State(sb): State<Shared>,
    axum::Form(form): axum::Form<AuthPage>,
) -> Response {
    let (isv, redirect) = match checked(&sb, &form) {
        Ok(checked) => checked,
        Err(refused) => return page(StatusCode::BAD_REQUEST, refused),
    };
    let Some(merchant) = form
        .merchant_app_id
        .filter(|m| !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_digit()))
    else {
        return page(StatusCode::BAD_REQUEST, "<p>merchant_app_id: digits</p>");
    };
    let code = random_alnum(32);
    sb.lock().grants.codes.insert(
        code.clone(),
        Code {
            isv: isv.clone(),
            merchant,
            issued_at: OffsetDateTime::now_utc(),
        },
    );
    let mut back = vec![
        ("app_id", isv.as_str()),
        ("source", "alipay_app_auth"),
        ("app_auth_code", code.as_str()),
    ];
    if let Some(state) = form.state.as_deref().filter(|s| !s.is_empty()) {
        back.push(("state", state));
    }
    crate::sandbox::redirect_back(&redirect, &back)
}

#[derive(Debug, Deserialize)]
pub(super) struct Revoke {
    auth_app_id: String,
}

/// `POST /sandbox/revoke-authorisation {"auth_app_id"}`: the merchant cancels its
/// authorisations in Alipay's console.
pub(super) async fn control_revoke(
    State(sb): State<Shared>,
    axum::Json(revoke): axum::Json<Revoke>,
) -> Response {
    axum::Json(json!({"revoked": sb.revoke(&revoke.auth_app_id)})).into_response()
}
