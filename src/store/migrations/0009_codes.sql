-- Static payment codes (聚合码): the URL's token is kept only as its hash.
CREATE TABLE codes (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    amount BIGINT CHECK (amount IS NULL OR amount > 0),
    currency TEXT NOT NULL,
    methods TEXT NOT NULL,
    expires_at BIGINT,
    disabled_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX codes_by_merchant ON codes (merchant_id, seq);

-- Wallet OAuth states (the cashier asking WeChat who the payer is), single-use, by hash.
CREATE TABLE payer_identity_states (
    state_hash TEXT PRIMARY KEY,
    checkout_id TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
