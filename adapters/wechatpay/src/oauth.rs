//! The official account's web OAuth, silent scope (网页授权 `snsapi_base`): inside WeChat the
//! browser goes to `open.weixin.qq.com/connect/oauth2/authorize?appid=…&redirect_uri=…&
//! response_type=code&scope=snsapi_base&state=…#wechat_redirect` (parameters in that order, as
//! WeChat's page wants them) and comes back with `code` and `state`; the server exchanges the
//! code at `api.weixin.qq.com/sns/oauth2/access_token?appid=…&secret=…&code=…&
//! grant_type=authorization_code` for the payer's `openid` under that app. A code is single-use
//! and lives five minutes. The openid is the app's: it is the `payer.openid` of a JSAPI order
//! under the same app id (and the app's secret never leaves the server).

use serde::Deserialize;

use moongate_contract::{
    AdapterError, CallContext, HttpMethod, HttpRequest, HttpResponse, PayerIdentity, Secret,
};

use crate::WechatPayAdapter;

/// WeChat's authorisation page.
pub const PRODUCTION_AUTHORIZE_URL: &str = "https://open.weixin.qq.com/connect/oauth2/authorize";
/// WeChat's official-account API host.
pub const PRODUCTION_API_URL: &str = "https://api.weixin.qq.com";

/// The app's OAuth settings, secrets resolved.
#[derive(Clone, Debug)]
pub struct OAuth {
    /// The official account's AppSecret.
    pub app_secret: Secret<String>,
    /// The authorisation page.
    pub authorize_url: String,
    /// The API host (no trailing slash).
    pub api_url: String,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    openid: Option<String>,
    #[serde(default)]
    errcode: Option<i64>,
    #[serde(default)]
    errmsg: Option<String>,
}

impl PayerIdentity for WechatPayAdapter {
    fn identity_url(&self, redirect_uri: &str, state: &str) -> String {
        let authorize = self
            .oauth
            .as_ref()
            .map_or(PRODUCTION_AUTHORIZE_URL, |o| o.authorize_url.as_str());
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        format!(
            "{authorize}?appid={}&redirect_uri={}&response_type=code&scope=snsapi_base&state={}#wechat_redirect",
            enc(self.payer_appid()),
            enc(redirect_uri),
            enc(state)
        )
    }

    fn identity_code_parameter(&self) -> &'static str {
        "code"
    }

    fn prepare_identity(&self, _cx: &CallContext, code: &str) -> Result<HttpRequest, AdapterError> {
        let oauth = self.oauth.as_ref().ok_or_else(|| {
            AdapterError::InvalidRequest("the account configures no oauth_app_secret".to_owned())
        })?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("appid", self.payer_appid());
        query.append_pair("secret", oauth.app_secret.expose());
        query.append_pair("code", code);
        query.append_pair("grant_type", "authorization_code");
        Ok(HttpRequest {
            method: HttpMethod::Get,
            url: format!(
                "{}/sns/oauth2/access_token?{}",
                oauth.api_url,
                query.finish()
            ),
            headers: vec![("accept".to_owned(), "application/json".to_owned())],
            body: Vec::new(),
        })
    }

    /// `{"access_token","expires_in","refresh_token","openid","scope"}`, or
    /// `{"errcode","errmsg"}` (HTTP 200 either way): 40029 invalid code, 40163 code used,
    /// 40125 wrong secret, 40013 wrong app id are refusals; the system's `-1` (busy) and
    /// anything unreadable are not.
    fn parse_identity(&self, resp: &HttpResponse) -> Result<String, AdapterError> {
        if resp.status != 200 {
            return Err(AdapterError::Protocol(format!("HTTP {}", resp.status)));
        }
        let answer: TokenAnswer = serde_json::from_slice(&resp.body)
            .map_err(|e| AdapterError::Protocol(format!("token answer: {e}")))?;
        match (answer.errcode, answer.openid) {
            (None | Some(0), Some(openid)) if !openid.is_empty() => Ok(openid),
            (Some(-1), _) => Err(AdapterError::Indeterminate {
                code: "-1".to_owned(),
                message: answer.errmsg.unwrap_or_default(),
            }),
            (Some(code), _) => Err(AdapterError::Rejected {
                code: code.to_string(),
                message: answer.errmsg.unwrap_or_default(),
            }),
            (None, _) => Err(AdapterError::Protocol("no openid in the answer".to_owned())),
        }
    }
}
