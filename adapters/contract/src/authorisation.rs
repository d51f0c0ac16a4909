//! Merchant authorisations of a partner's app (Alipay's 应用授权, more-wallets.md §7): the
//! merchant consents on the provider's page, its browser comes back with a single-use code,
//! and the partner's app exchanges the code for a token it then sends with every call it makes
//! for that merchant (and refreshes before it lapses).
//!
//! The adapter stays pure: the partner's adapter renders the consent URL and the token calls
//! ([`Authorising`]); the core runs the flow, keeps the tokens (sealed, in the ledger) and
//! hands the current one to the merchant's adapter through a [`TokenSlot`].

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use crate::adapter::CallContext;
use crate::error::AdapterError;
use crate::http::{HttpRequest, HttpResponse};
use crate::secret::Secret;

/// The token a merchant's adapter calls with, replaced by the core when the merchant
/// authorises (again) or the token is refreshed. Cloning shares the slot.
#[derive(Clone, Default)]
pub struct TokenSlot(Arc<RwLock<Option<Secret<String>>>>);

impl TokenSlot {
    /// A slot holding `token` (one configured as a secret), or none yet.
    pub fn new(token: Option<Secret<String>>) -> TokenSlot {
        TokenSlot(Arc::new(RwLock::new(token)))
    }

    /// The current token, if the merchant has authorised.
    pub fn current(&self) -> Option<Secret<String>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the token (`None`: no longer authorised).
    pub fn replace(&self, token: Option<Secret<String>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// True when both handles are the same slot.
    pub fn same(&self, other: &TokenSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.current().is_some();
        write!(
            f,
            "TokenSlot({})",
            if held { "[REDACTED]" } else { "empty" }
        )
    }
}

/// What a token call is given.
#[derive(Clone, Copy, Debug)]
pub enum Grant<'a> {
    /// The code the merchant's browser brought back from the consent page.
    Code(&'a str),
    /// The refresh token of the current pair.
    Refresh(&'a str),
}

/// A merchant's authorisation as the provider issued it.
#[derive(Debug)]
pub struct Granted {
    /// The merchant's identity at the provider (Alipay: its app, `auth_app_id`).
    pub merchant: String,
    /// The merchant's account id, when sent (Alipay: `user_id`, its PID).
    pub user_id: Option<String>,
    /// The token calls carry.
    pub token: Secret<String>,
    /// The token that renews it.
    pub refresh_token: Secret<String>,
    /// Seconds the token lives.
    pub expires_in_secs: i64,
    /// Seconds the refresh token lives (0 when not sent).
    pub refresh_expires_in_secs: i64,
}

/// A partner's app that merchants authorise to act for them.
pub trait Authorising: Send + Sync + fmt::Debug + 'static {
    /// The page the merchant consents on, sending its browser back to `redirect_uri` with
    /// `state` and a code.
    fn consent_url(&self, redirect_uri: &str, state: &str) -> String;

    /// The query parameter of the redirect back that carries the code.
    fn code_parameter(&self) -> &'static str;

    /// Renders the exchange of a code, or the refresh of a pair.
    fn prepare_grant(
        &self,
        cx: &CallContext,
        grant: Grant<'_>,
    ) -> Result<HttpRequest, AdapterError>;

    /// Reads (verifies) the token call's answer; a spent, expired or unknown code or refresh
    /// token is [`AdapterError::Rejected`].
    fn parse_grant(&self, resp: &HttpResponse) -> Result<Granted, AdapterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_shared_by_its_clones_and_never_prints_its_token() {
        let slot = TokenSlot::new(None);
        let handle = slot.clone();
        assert_eq!(format!("{slot:?}"), "TokenSlot(empty)");
        handle.replace(Some(Secret::new("tok-1".to_owned())));
        assert_eq!(
            slot.current().map(|t| t.expose().clone()).as_deref(),
            Some("tok-1")
        );
        assert_eq!(format!("{slot:?}"), "TokenSlot([REDACTED])");
        assert!(slot.same(&handle));
        assert!(!slot.same(&TokenSlot::default()));
    }
}
