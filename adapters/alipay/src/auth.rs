//! Application authorisation (应用授权, more-wallets.md §7), the ISV app's side: the merchant's
//! consent URL (`appToAppAuth`), and `alipay.open.auth.token.app`, which exchanges the
//! `app_auth_code` the merchant's browser brings back for an `app_auth_token` and an
//! `app_refresh_token`, or refreshes the pair. Called on the ISV app's own adapter (the
//! partner's, which carries no token), through the contract's [`Authorising`].

use serde::{Deserialize, Serialize};

use moongate_contract::{
    AdapterError, Authorising, CallContext, Grant, Granted, HttpRequest, HttpResponse, Secret,
};

use crate::AlipayAdapter;

/// The token method.
pub const TOKEN_METHOD: &str = "alipay.open.auth.token.app";

/// Alipay's consent page (sandbox: `https://openapi-sandbox.dl.alipaydev.com/oauth2/appToAppAuth.htm`).
pub const PRODUCTION_CONSENT_URL: &str = "https://openauth.alipay.com/oauth2/appToAppAuth.htm";

#[derive(Serialize)]
struct TokenBiz<'a> {
    grant_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
}

#[derive(Debug, Default, Deserialize)]
struct TokenFields {
    #[serde(default)]
    app_auth_token: Option<String>,
    #[serde(default)]
    app_refresh_token: Option<String>,
    #[serde(default)]
    auth_app_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    re_expires_in: Option<i64>,
}

/// The answer node: the tokens under `tokens[]` (current), or flat (older answers).
#[derive(Debug, Default, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    tokens: Vec<TokenFields>,
    #[serde(flatten)]
    flat: TokenFields,
}

impl Authorising for AlipayAdapter {
    /// `{consent_url}?app_id={isv}&redirect_uri=…&state=…`.
    fn consent_url(&self, redirect_uri: &str, state: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("app_id", &self.app_id);
        query.append_pair("redirect_uri", redirect_uri);
        query.append_pair("state", state);
        format!("{}?{}", self.consent_url, query.finish())
    }

    fn code_parameter(&self) -> &'static str {
        "app_auth_code"
    }

    /// `alipay.open.auth.token.app` for the ISV app itself.
    fn prepare_grant(
        &self,
        cx: &CallContext,
        grant: Grant<'_>,
    ) -> Result<HttpRequest, AdapterError> {
        if self.authorisation.is_some() {
            return Err(AdapterError::InvalidRequest(
                "the token call is the ISV app's own, not a served merchant's".to_owned(),
            ));
        }
        let biz = match grant {
            Grant::Code(code) => TokenBiz {
                grant_type: "authorization_code",
                code: Some(code),
                refresh_token: None,
            },
            Grant::Refresh(token) => TokenBiz {
                grant_type: "refresh_token",
                code: None,
                refresh_token: Some(token),
            },
        };
        self.server_call(cx, TOKEN_METHOD, None, &biz)
    }

    /// The answer: the tokens when signed `10000`; a spent or unknown code or refresh token
    /// (`40002`) is a refusal.
    fn parse_grant(&self, resp: &HttpResponse) -> Result<Granted, AdapterError> {
        let opened = self.open::<TokenAnswer>(TOKEN_METHOD, resp)?;
        if opened.common.code != "10000" {
            return Err(opened.gateway_error());
        }
        let TokenAnswer { tokens, flat } = opened.body;
        let fields = tokens.into_iter().next().unwrap_or(flat);
        let missing = |what: &str| AdapterError::Protocol(format!("{what} missing"));
        let secret = |value: Option<String>, what: &str| {
            value
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .ok_or_else(|| missing(what))
        };
        Ok(Granted {
            merchant: fields
                .auth_app_id
                .filter(|a| !a.is_empty())
                .ok_or_else(|| missing("auth_app_id"))?,
            user_id: fields.user_id,
            token: secret(fields.app_auth_token, "app_auth_token")?,
            refresh_token: secret(fields.app_refresh_token, "app_refresh_token")?,
            expires_in_secs: fields
                .expires_in
                .filter(|s| *s > 0)
                .ok_or_else(|| missing("expires_in"))?,
            refresh_expires_in_secs: fields.re_expires_in.unwrap_or(0),
        })
    }
}
