//! Who the payer is inside a wallet's own app: the wallet's silent OAuth (WeChat's
//! `snsapi_base`, Alipay's `auth_base`) sends the shopper's browser back with a single-use
//! code, which the merchant's server exchanges for the payer's id under the merchant's app
//! (WeChat's `openid`, Alipay's `open_id` or user id), the id an in-app payment
//! (`wechat_jsapi`, `alipay_jsapi`) needs. Pure, like every adapter call: the core sends the
//! exchange.

use std::fmt;

use crate::adapter::CallContext;
use crate::error::AdapterError;
use crate::http::{HttpRequest, HttpResponse};

/// An account's way to learn the payer's id inside its wallet's app.
pub trait PayerIdentity: Send + Sync + fmt::Debug {
    /// The wallet's authorisation page, sending the browser back to `redirect_uri` with
    /// `state` and a code.
    fn identity_url(&self, redirect_uri: &str, state: &str) -> String;

    /// The query parameter of the redirect back that carries the code.
    fn identity_code_parameter(&self) -> &'static str;

    /// Renders the code's exchange.
    fn prepare_identity(&self, cx: &CallContext, code: &str) -> Result<HttpRequest, AdapterError>;

    /// Reads the exchange's answer: the payer's id; a spent, expired or foreign code is
    /// [`AdapterError::Rejected`].
    fn parse_identity(&self, resp: &HttpResponse) -> Result<String, AdapterError>;
}
