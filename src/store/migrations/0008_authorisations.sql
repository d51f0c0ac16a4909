-- Merchants' authorisations of partners' apps (Alipay ISV), tokens sealed by the gateway, and
-- the single-use links that start them.
CREATE TABLE authorisations (
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    user_id TEXT,
    token_sealed TEXT NOT NULL,
    refresh_sealed TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    refresh_expires_at BIGINT,
    status TEXT NOT NULL,
    status_code TEXT,
    granted_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL,
    refresh_lease_until BIGINT,
    PRIMARY KEY (merchant_id, account_id)
);
CREATE TABLE authorisation_links (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    link_hash TEXT NOT NULL UNIQUE,
    state_hash TEXT UNIQUE,
    browser_hash TEXT,
    opened_at BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
