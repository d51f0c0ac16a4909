//! Who pays inside the Alipay app: the user authorisation with the silent scope (用户信息授权,
//! `auth_base`). The shopper's browser goes to
//! `openauth.alipay.com/oauth2/publicAppAuthorize.htm?app_id=…&scope=auth_base&redirect_uri=…&
//! state=…` and comes back with `auth_code` (and `app_id`, `source`, `scope`, `state`); the
//! server exchanges the code with `alipay.system.oauth.token` (`grant_type=authorization_code`,
//! `code`: application parameters of their own, not a `biz_content`) for the payer's id under
//! the app: `open_id` for apps created since Alipay's OpenID change, `user_id` (`2088…`) for
//! older ones. A code is single-use. That id is the `buyer_open_id` (or `buyer_id`) of an
//! `alipay.trade.create` JSAPI order under the same app.
//!
//! For a merchant an ISV serves, the link names the merchant's own app (`auth_app_id`: "the
//! app id must be the authorising merchant's, not the ISV's", Alipay's support notes on
//! `isv.code-invalid`), and the ISV exchanges the code with the merchant's `app_auth_token`.

use serde::Deserialize;

use moongate_contract::{AdapterError, CallContext, HttpRequest, HttpResponse, PayerIdentity};

use crate::AlipayAdapter;

/// Alipay's user authorisation page (sandbox:
/// `https://openauth-sandbox.dl.alipaydev.com/oauth2/publicAppAuthorize.htm`).
pub const PRODUCTION_AUTHORIZE_URL: &str =
    "https://openauth.alipay.com/oauth2/publicAppAuthorize.htm";

/// The exchange method.
pub const TOKEN_METHOD: &str = "alipay.system.oauth.token";

/// The payer's id, in the generation its app gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuyerId<'a> {
    /// A `2088…` user id (16 digits): sent as `buyer_id`.
    UserId(&'a str),
    /// An `open_id`: sent as `buyer_open_id`.
    OpenId(&'a str),
}

impl<'a> BuyerId<'a> {
    /// Tells the two apart: 16 digits starting `2088` is a user id, other letters and digits
    /// (up to 128) an open id.
    pub fn parse(id: &'a str) -> Option<BuyerId<'a>> {
        if id.len() == 16 && id.starts_with("2088") && id.bytes().all(|b| b.is_ascii_digit()) {
            return Some(BuyerId::UserId(id));
        }
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then_some(BuyerId::OpenId(id))
    }

    /// The `buyer_id`, for a user id.
    pub fn user_id(self) -> Option<&'a str> {
        match self {
            BuyerId::UserId(id) => Some(id),
            BuyerId::OpenId(_) => None,
        }
    }

    /// The `buyer_open_id`, for an open id.
    pub fn open_id(self) -> Option<&'a str> {
        match self {
            BuyerId::OpenId(id) => Some(id),
            BuyerId::UserId(_) => None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    open_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

impl PayerIdentity for AlipayAdapter {
    /// `{page}?app_id=…&scope=auth_base&redirect_uri=…&state=…`, naming the merchant's own app.
    fn identity_url(&self, redirect_uri: &str, state: &str) -> String {
        let app_id = self
            .authorisation
            .as_ref()
            .map_or(self.app_id.as_str(), |(auth_app_id, _)| {
                auth_app_id.as_str()
            });
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("app_id", app_id);
        query.append_pair("scope", "auth_base");
        query.append_pair("redirect_uri", redirect_uri);
        query.append_pair("state", state);
        format!("{}?{}", self.user_authorize_url, query.finish())
    }

    fn identity_code_parameter(&self) -> &'static str {
        "auth_code"
    }

    fn prepare_identity(&self, cx: &CallContext, code: &str) -> Result<HttpRequest, AdapterError> {
        self.server_call_with(
            cx,
            TOKEN_METHOD,
            None,
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code.to_owned()),
            ],
        )
    }

    /// `{user_id | open_id, access_token, expires_in, refresh_token, re_expires_in}`, signed
    /// and without a `code` (as Alipay answers this method); a spent, expired or foreign code
    /// is an `error_response` `40002 isv.code-invalid` (a refusal).
    fn parse_identity(&self, resp: &HttpResponse) -> Result<String, AdapterError> {
        let opened = self.open_with::<TokenAnswer>(TOKEN_METHOD, resp, true)?;
        if opened.common.code != "10000" {
            return Err(opened.gateway_error());
        }
        let TokenAnswer { open_id, user_id } = opened.body;
        open_id
            .filter(|id| !id.is_empty())
            .or(user_id.filter(|id| !id.is_empty()))
            .filter(|id| BuyerId::parse(id).is_some())
            .ok_or_else(|| AdapterError::Protocol("no open_id or user_id in the answer".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_user_ids_from_open_ids() {
        assert_eq!(
            BuyerId::parse("2088102150477652"),
            Some(BuyerId::UserId("2088102150477652"))
        );
        assert_eq!(
            BuyerId::parse("099luGU2ef8yQ2xD"),
            Some(BuyerId::OpenId("099luGU2ef8yQ2xD"))
        );
        // Sixteen digits not starting 2088 are an open id's shape, not a user id.
        assert_eq!(
            BuyerId::parse("1088102150477652"),
            Some(BuyerId::OpenId("1088102150477652"))
        );
        assert_eq!(BuyerId::parse(""), None);
        assert_eq!(BuyerId::parse("a b"), None);
        assert_eq!(BuyerId::parse(&"x".repeat(129)), None);
    }
}
