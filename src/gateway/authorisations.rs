//! Merchants' authorisations of partners' apps (Alipay ISV 应用授权), run by Moongate for the
//! sub-merchant accounts that configure no token:
//!
//! 1. an operator asks for a start link (`POST /authorisations` on the admin listener, or
//!    `moongate authorise`): a single-purpose URL `/authorise/{token}`, alive [`LINK_LIFE`],
//!    whose token the ledger keeps only as a hash;
//! 2. the merchant opens it: Moongate binds a fresh `state` to that browser (a cookie; both
//!    kept as hashes) and sends it to the provider's consent page, with the one configured
//!    callback (`{public_base_url}/authorise/callback`) as `redirect_uri`;
//! 3. the provider sends the browser back with a code and the `state`: the state is taken once,
//!    for that browser, within [`STATE_LIFE`]; the code is exchanged through the provider port;
//!    an authorisation naming another merchant app than the account's is refused; the tokens
//!    are sealed ([`crate::sealing`]) into the ledger and the account's adapter calls with the
//!    new token at once;
//! 4. the janitor refreshes a token within [`REFRESH_WITHIN`] of its end (one instance, under a
//!    lease: a refresh token is spent by its use), and every instance loads the ledger's current
//!    token into its adapters;
//! 5. a call the provider refuses for the token ([`moongate_contract::AdapterError::Unauthorised`],
//!    reported by the port) marks the authorisation `refused`, unless another instance already
//!    replaced the token; a refused authorisation is tried with its refresh token, and when that
//!    is refused too it is `revoked`: the merchant must authorise again. `GET /authorisations`
//!    reports every account's authorisation; its tokens never leave the ledger unsealed.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use moongate_contract::{Authorising, Grant, Granted, Prepared, Secret};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{Bound, Gateway};
use crate::cashier::key::token_hash;
use crate::config::{Account, ManagedAuthorisation};
use crate::ledger::{new_id, random_token};
use crate::port::{Caller, Exchange};
use crate::sealing::SealError;
use crate::store::{AuthorisationLink, AuthorisationStatus, StoreError, StoredAuthorisation};

/// How long a start link works.
pub const LINK_LIFE: time::Duration = time::Duration::hours(24);
/// How long the consent may take, from opening the link to the callback.
pub const STATE_LIFE: time::Duration = time::Duration::minutes(15);
/// A token this close to its end is refreshed.
pub const REFRESH_WITHIN: time::Duration = time::Duration::days(30);
/// How long one instance holds a refresh before another may try.
const REFRESH_LEASE: time::Duration = time::Duration::minutes(2);
/// The cookie binding a consent to the browser that opened the link.
pub const BROWSER_COOKIE: &str = "moongate_authorise";
/// Where the provider sends the merchant's browser back.
pub const CALLBACK_PATH: &str = "/authorise/callback";

/// Why an authorisation step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AuthorisationError {
    /// No such merchant or account.
    #[error("merchant {merchant:?} has no account {account:?}")]
    UnknownAccount {
        /// Merchant.
        merchant: String,
        /// Account.
        account: String,
    },
    /// The account does not authorise its partner's app through Moongate.
    #[error(
        "account {0:?} is not authorised through Moongate (it needs a partner whose app merchants \
         authorise, and no configured app_auth_token)"
    )]
    NotManaged(String),
    /// The start link is unknown, lapsed or already used.
    #[error("this authorisation link is unknown, has lapsed or was used: ask for a new one")]
    LinkInvalid,
    /// The callback's state is unknown, used, too old or from another browser.
    #[error(
        "this authorisation answer is unknown, was used, is too old or belongs to another browser: \
         open the authorisation link again"
    )]
    StateInvalid,
    /// The provider sent the browser back without a code (the merchant declined).
    #[error("the authorisation was not given (no code came back)")]
    NoCode,
    /// The authorisation is another merchant app's than the account's.
    #[error("the authorisation is for app {got}, but this account is for app {expected}")]
    WrongMerchant {
        /// The account's identity.
        expected: String,
        /// The authorisation's.
        got: String,
    },
    /// The provider did not exchange the code.
    #[error("the provider did not exchange the authorisation code: {0}")]
    Provider(String),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A token did not seal or open.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A start link.
#[derive(Debug)]
pub struct StartedAuthorisation {
    /// The URL the merchant opens.
    pub url: String,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

/// Where an account's authorisation stands, as `GET /authorisations` reports it.
#[derive(Debug, serde::Serialize)]
pub struct AuthorisationView {
    /// Merchant.
    pub merchant: String,
    /// Account.
    pub account: String,
    /// Its partner.
    pub partner: String,
    /// The merchant's app.
    pub identity: String,
    /// `not_authorised`, `active`, `refused` or `revoked`.
    pub status: &'static str,
    /// The provider's code of the last refusal.
    pub status_code: Option<String>,
    /// When the tokens were issued, RFC 3339.
    pub granted_at: Option<String>,
    /// When the token lapses, RFC 3339.
    pub expires_at: Option<String>,
}

/// A new start link for one managed account, stored in `store`.
async fn create_link(
    store: &dyn crate::store::AuthorisationStore,
    public_base_url: &str,
    merchant_id: &str,
    account_id: &str,
    now: OffsetDateTime,
) -> Result<StartedAuthorisation, AuthorisationError> {
    let token = random_token(43);
    let link = AuthorisationLink {
        id: new_id("aul"),
        merchant_id: merchant_id.to_owned(),
        account_id: account_id.to_owned(),
        link_hash: token_hash(&token),
        created_at: now,
        expires_at: now + LINK_LIFE,
    };
    let expires_at = link.expires_at;
    store.create_authorisation_link(link).await?;
    Ok(StartedAuthorisation {
        url: format!("{public_base_url}/authorise/{token}"),
        expires_at,
    })
}

/// The account's managed authorisation and its partner's app, or why it has none.
pub fn managed(
    account: &Account,
) -> Result<(&ManagedAuthorisation, Arc<dyn Authorising>), AuthorisationError> {
    let authorising = account.partner.as_ref().and_then(|p| p.authorising.clone());
    match (&account.authorisation, authorising) {
        (Some(managed), Some(authorising)) => Ok((managed, authorising)),
        _ => Err(AuthorisationError::NotManaged(account.id.clone())),
    }
}

/// What a sealed token belongs to (its associated data).
fn seal_context(merchant_id: &str, account_id: &str, which: &str) -> String {
    format!("authorisation/{merchant_id}/{account_id}/{which}")
}

fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

impl Gateway {
    fn bound_or_unknown(
        &self,
        merchant_id: &str,
        account_id: &str,
    ) -> Result<Bound, AuthorisationError> {
        self.bound(merchant_id, account_id)
            .ok_or_else(|| AuthorisationError::UnknownAccount {
                merchant: merchant_id.to_owned(),
                account: account_id.to_owned(),
            })
    }

    /// A start link for an account that authorises its partner's app through Moongate.
    pub async fn start_authorisation(
        &self,
        merchant_id: &str,
        account_id: &str,
    ) -> Result<StartedAuthorisation, AuthorisationError> {
        let bound = self.bound_or_unknown(merchant_id, account_id)?;
        managed(bound.account())?;
        let base = self.config().public_base_url.clone();
        create_link(&*self.store, &base, merchant_id, account_id, self.now()).await
    }

    /// The merchant's browser opened a start link: the consent page to send it to, and the
    /// value of the cookie that binds the consent to it.
    pub async fn open_authorisation(
        &self,
        link_token: &str,
    ) -> Result<(String, String), AuthorisationError> {
        let (state, browser) = (random_token(32), random_token(32));
        let link = self
            .store
            .open_authorisation_link(
                &token_hash(link_token),
                &token_hash(&state),
                &token_hash(&browser),
                self.now(),
            )
            .await?
            .ok_or(AuthorisationError::LinkInvalid)?;
        let bound = self.bound_or_unknown(&link.merchant_id, &link.account_id)?;
        let (_, authorising) = managed(bound.account())?;
        let consent = authorising.consent_url(&self.public_url(CALLBACK_PATH), &state);
        Ok((consent, browser))
    }

    /// The provider sent the browser back (`query`: the callback's parameters; `browser`: its
    /// cookie): takes the state, exchanges the code, stores the tokens. The merchant and
    /// account authorised.
    pub async fn finish_authorisation(
        &self,
        query: &HashMap<String, String>,
        browser: Option<&str>,
    ) -> Result<(String, String), AuthorisationError> {
        let state = query.get("state").filter(|s| !s.is_empty());
        let (Some(state), Some(browser)) = (state, browser) else {
            return Err(AuthorisationError::StateInvalid);
        };
        let now = self.now();
        let link = self
            .store
            .take_authorisation_state(
                &token_hash(state),
                &token_hash(browser),
                now,
                now - STATE_LIFE,
            )
            .await?
            .ok_or(AuthorisationError::StateInvalid)?;
        let bound = self.bound_or_unknown(&link.merchant_id, &link.account_id)?;
        let account = bound.account();
        let (managed, authorising) = managed(account)?;
        let code = query
            .get(authorising.code_parameter())
            .filter(|c| !c.is_empty())
            .ok_or(AuthorisationError::NoCode)?;
        let granted = self
            .grant(&link.merchant_id, account, &*authorising, Grant::Code(code))
            .await
            .into_answer()
            .map_err(AuthorisationError::Provider)?;
        if granted.merchant != managed.identity {
            return Err(AuthorisationError::WrongMerchant {
                expected: managed.identity.clone(),
                got: granted.merchant,
            });
        }
        self.store_grant(&link.merchant_id, account, granted, Some(&link.id))
            .await?;
        info!(
            merchant_id = %link.merchant_id,
            account_id = %link.account_id,
            "the merchant authorised the partner's app"
        );
        Ok((link.merchant_id, link.account_id))
    }

    /// One token call of the partner's app for `account`, through the port (its limits, its
    /// partner's breaker, the attempt log).
    async fn grant(
        &self,
        merchant_id: &str,
        account: &Account,
        authorising: &dyn Authorising,
        grant: Grant<'_>,
    ) -> Exchange<Granted> {
        let operation = match grant {
            Grant::Code(_) => "authorise",
            Grant::Refresh(_) => "authorisation_refresh",
        };
        let cx = self.call_context();
        let prepared = authorising.prepare_grant(&cx, grant).map(Prepared::Send);
        let caller = Caller {
            merchant_id,
            account,
            subject: "authorisation",
            refund_id: None,
        };
        self.port()
            .exchange(caller, operation, prepared, |r| authorising.parse_grant(r))
            .await
    }

    /// Seals and stores newly issued tokens and puts the token in the account's adapter.
    async fn store_grant(
        &self,
        merchant_id: &str,
        account: &Account,
        granted: Granted,
        link_id: Option<&str>,
    ) -> Result<(), AuthorisationError> {
        let (managed, _) = managed(account)?;
        let partner_id = account
            .partner
            .as_ref()
            .map(|p| p.id.clone())
            .unwrap_or_default();
        let now = self.now();
        let seal = |secret: &Secret<String>, which: &str| {
            self.sealing
                .seal(secret, &seal_context(merchant_id, &account.id, which))
        };
        let record = StoredAuthorisation {
            merchant_id: merchant_id.to_owned(),
            account_id: account.id.clone(),
            partner_id,
            identity: granted.merchant.clone(),
            user_id: granted.user_id.clone(),
            token_sealed: seal(&granted.token, "token")?,
            refresh_sealed: seal(&granted.refresh_token, "refresh")?,
            expires_at: now + time::Duration::seconds(granted.expires_in_secs),
            refresh_expires_at: (granted.refresh_expires_in_secs > 0)
                .then(|| now + time::Duration::seconds(granted.refresh_expires_in_secs)),
            status: AuthorisationStatus::Active,
            status_code: None,
            granted_at: now,
            updated_at: now,
            version: 0,
        };
        let version = self.store.save_authorisation(record, link_id).await?;
        managed.slot.replace(Some(granted.token));
        self.note_loaded(merchant_id, &account.id, version);
        Ok(())
    }

    /// Records the ledger version of the token this instance's adapter now holds.
    fn note_loaded(&self, merchant_id: &str, account_id: &str, version: i64) {
        self.loaded_authorisations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((merchant_id.to_owned(), account_id.to_owned()), version);
    }

    fn loaded_version(&self, merchant_id: &str, account_id: &str) -> Option<i64> {
        self.loaded_authorisations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(merchant_id.to_owned(), account_id.to_owned()))
            .copied()
    }

    /// Loads the ledger's current tokens into the adapters of the config in force (at start,
    /// after a reload, at every janitor pass: another instance may have refreshed one). A
    /// revoked authorisation's token is taken out: its calls fail before they are sent.
    pub async fn sync_authorisations(&self) -> Result<(), StoreError> {
        let config = self.config();
        for stored in self.store.authorisations(None).await? {
            let Some(account) = config
                .merchants
                .get(&stored.merchant_id)
                .and_then(|m| m.account(&stored.account_id))
            else {
                continue;
            };
            let Some(managed) = &account.authorisation else {
                continue;
            };
            let in_slot = managed.slot.current().is_some();
            let loaded = self.loaded_version(&stored.merchant_id, &stored.account_id);
            if managed.identity != stored.identity || (loaded == Some(stored.version) && in_slot) {
                continue;
            }
            let token = match stored.status {
                AuthorisationStatus::Revoked => None,
                AuthorisationStatus::Active | AuthorisationStatus::Refused => {
                    let context = seal_context(&stored.merchant_id, &stored.account_id, "token");
                    match self.sealing.open(&stored.token_sealed, &context) {
                        Ok(token) => Some(token),
                        Err(error) => {
                            warn!(
                                %error,
                                merchant_id = %stored.merchant_id,
                                account_id = %stored.account_id,
                                "a stored authorisation does not open (was the server key changed?)"
                            );
                            continue;
                        }
                    }
                }
            };
            managed.slot.replace(token);
            self.note_loaded(&stored.merchant_id, &stored.account_id, stored.version);
        }
        Ok(())
    }

    /// Takes the refusals the port saw: each managed authorisation still at the version this
    /// instance calls with becomes `refused` (the next janitor pass tries its refresh token);
    /// one replaced meanwhile (refreshed by another instance) is loaded instead.
    pub async fn take_refusals(&self) -> Result<usize, StoreError> {
        let refusals = self.port().refusals().take();
        if refusals.is_empty() {
            return Ok(0);
        }
        let stored = self.store.authorisations(None).await?;
        let mut marked = 0;
        for refusal in &refusals {
            self.metrics
                .authorisation_refusals
                .get_or_create(&crate::metrics::AccountLabels {
                    merchant: refusal.merchant_id.clone(),
                    account: refusal.account_id.clone(),
                })
                .inc();
            let Some(found) = stored.iter().find(|s| {
                s.merchant_id == refusal.merchant_id && s.account_id == refusal.account_id
            }) else {
                // A configured token (or none yet): the log line and the metric report it.
                continue;
            };
            let loaded = self.loaded_version(&found.merchant_id, &found.account_id);
            if found.status != AuthorisationStatus::Active || loaded != Some(found.version) {
                continue;
            }
            if self
                .store
                .set_authorisation_status(
                    &found.merchant_id,
                    &found.account_id,
                    found.version,
                    AuthorisationStatus::Refused,
                    &refusal.code,
                    self.now(),
                )
                .await?
            {
                warn!(
                    merchant_id = %found.merchant_id,
                    account_id = %found.account_id,
                    code = %refusal.code,
                    "authorisation refused by the provider; its refresh token is tried next"
                );
                marked += 1;
            }
        }
        self.sync_authorisations().await?;
        Ok(marked)
    }

    /// Refreshes the authorisations due at `now` (within [`REFRESH_WITHIN`] of their end, or
    /// refused), one instance each; how many were refreshed.
    pub async fn refresh_authorisations(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        let config = self.config();
        let mut refreshed = 0;
        for stored in self.store.authorisations(None).await? {
            let due = match stored.status {
                AuthorisationStatus::Active => stored.expires_at - now <= REFRESH_WITHIN,
                AuthorisationStatus::Refused => true,
                AuthorisationStatus::Revoked => false,
            };
            let Some(account) = config
                .merchants
                .get(&stored.merchant_id)
                .and_then(|m| m.account(&stored.account_id))
            else {
                continue;
            };
            let Ok((managed, authorising)) = managed(account) else {
                continue;
            };
            if !due || managed.identity != stored.identity {
                continue;
            }
            if !self
                .store
                .claim_authorisation_refresh(
                    &stored.merchant_id,
                    &stored.account_id,
                    stored.version,
                    now,
                    now + REFRESH_LEASE,
                )
                .await?
            {
                continue;
            }
            let context = seal_context(&stored.merchant_id, &stored.account_id, "refresh");
            let refresh = match self.sealing.open(&stored.refresh_sealed, &context) {
                Ok(refresh) => refresh,
                Err(error) => {
                    warn!(%error, account_id = %stored.account_id, "refresh token does not open");
                    continue;
                }
            };
            let exchange = self
                .grant(
                    &stored.merchant_id,
                    account,
                    &*authorising,
                    Grant::Refresh(refresh.expose()),
                )
                .await;
            match exchange {
                Exchange::Answer(granted) if granted.merchant == stored.identity => {
                    match self
                        .store_grant(&stored.merchant_id, account, granted, None)
                        .await
                    {
                        Ok(()) => refreshed += 1,
                        Err(error) => {
                            warn!(%error, account_id = %stored.account_id, "refreshed tokens not stored")
                        }
                    }
                }
                Exchange::Adapter(
                    moongate_contract::AdapterError::Rejected { code, .. }
                    | moongate_contract::AdapterError::Unauthorised { code, .. },
                ) => {
                    // The refresh token is no good either: only a new authorisation helps.
                    warn!(
                        merchant_id = %stored.merchant_id,
                        account_id = %stored.account_id,
                        %code,
                        "authorisation revoked: the merchant must authorise again"
                    );
                    self.store
                        .set_authorisation_status(
                            &stored.merchant_id,
                            &stored.account_id,
                            stored.version,
                            AuthorisationStatus::Revoked,
                            &code,
                            self.now(),
                        )
                        .await?;
                }
                other => {
                    // Unknown fate (or another app's answer): the lease lapses and a later pass
                    // tries again.
                    warn!(
                        account_id = %stored.account_id,
                        outcome = other.describe(),
                        "authorisation refresh did not complete"
                    );
                }
            }
        }
        self.sync_authorisations().await?;
        Ok(refreshed)
    }

    /// Every managed account's authorisation, for `GET /authorisations`.
    pub async fn authorisation_views(&self) -> Result<Vec<AuthorisationView>, StoreError> {
        let stored = self.store.authorisations(None).await?;
        let config = self.config();
        let mut views = Vec::new();
        for merchant in config.merchants.values() {
            for account in &merchant.accounts {
                let Some(managed) = &account.authorisation else {
                    continue;
                };
                let found = stored.iter().find(|s| {
                    s.merchant_id == merchant.id
                        && s.account_id == account.id
                        && s.identity == managed.identity
                });
                views.push(AuthorisationView {
                    merchant: merchant.id.clone(),
                    account: account.id.clone(),
                    partner: account
                        .partner
                        .as_ref()
                        .map(|p| p.id.clone())
                        .unwrap_or_default(),
                    identity: managed.identity.clone(),
                    status: found.map_or("not_authorised", |s| s.status.as_str()),
                    status_code: found.and_then(|s| s.status_code.clone()),
                    granted_at: found.and_then(|s| rfc3339(s.granted_at)),
                    expires_at: found.and_then(|s| rfc3339(s.expires_at)),
                });
            }
        }
        Ok(views)
    }

    /// Takes the port's refusals as they come (a task of the server).
    pub async fn refusal_loop(self: Arc<Self>) {
        loop {
            self.port().refusals().arrived.notified().await;
            if let Err(error) = self.take_refusals().await {
                warn!(%error, "authorisation refusals not recorded");
            }
        }
    }
}
