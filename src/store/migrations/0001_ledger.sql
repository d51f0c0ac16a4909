-- Moongate ledger, PostgreSQL. The same tables and meaning as the SQLite ledger: times are
-- Unix milliseconds (BIGINT), amounts integer minor units (BIGINT), JSON columns TEXT kept byte
-- for byte as written (metadata key order is the merchant's).

CREATE TABLE payments (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    method TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    description TEXT NOT NULL,
    return_url TEXT,
    metadata TEXT NOT NULL,
    provider_order_id TEXT NOT NULL,
    provider_ref TEXT,
    status TEXT NOT NULL,
    next_action TEXT,
    failure TEXT,
    amount_refunded BIGINT NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    payer TEXT,
    route TEXT,
    channel TEXT,
    next_check_at BIGINT,
    checks INTEGER NOT NULL DEFAULT 0,
    paid_at BIGINT,
    UNIQUE (provider, account_id, provider_order_id)
);
CREATE INDEX payments_by_merchant ON payments (merchant_id, seq);
CREATE INDEX payments_by_status ON payments (status, updated_at);
CREATE INDEX payments_due ON payments (next_check_at)
    WHERE status IN ('pending', 'unknown', 'requires_action');
CREATE INDEX payments_paid ON payments (account_id, paid_at) WHERE paid_at IS NOT NULL;

CREATE TABLE refunds (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    merchant_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    failure TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    next_check_at BIGINT,
    checks INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX refunds_by_payment ON refunds (payment_id);
CREATE INDEX refunds_by_status ON refunds (status, updated_at);
CREATE INDEX refunds_due ON refunds (next_check_at) WHERE status IN ('pending', 'unknown');

CREATE TABLE attempts (
    seq BIGSERIAL PRIMARY KEY,
    payment_id TEXT NOT NULL,
    account_id TEXT,
    refund_id TEXT,
    operation TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    elapsed_ms BIGINT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX attempts_by_payment ON attempts (payment_id, seq);

CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_by_object ON events (object_id, seq);
CREATE FUNCTION moongate_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION moongate_events_append_only();

CREATE TABLE outbox (
    event_seq BIGINT PRIMARY KEY REFERENCES events (seq),
    merchant_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    delivered_at BIGINT,
    last_error TEXT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

CREATE TABLE deliveries (
    seq BIGSERIAL PRIMARY KEY,
    event_seq BIGINT NOT NULL REFERENCES events (seq),
    attempted_at BIGINT NOT NULL,
    delivered BOOLEAN NOT NULL,
    error TEXT
);
CREATE INDEX deliveries_by_event ON deliveries (event_seq);

CREATE TABLE idempotency_keys (
    merchant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id TEXT,
    status INTEGER,
    response BYTEA,
    created_at BIGINT NOT NULL,
    completed_at BIGINT,
    PRIMARY KEY (merchant_id, key)
);

CREATE TABLE nonces (
    merchant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    keep_until BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, nonce)
);
CREATE INDEX nonces_by_expiry ON nonces (keep_until);

CREATE TABLE inbox (
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    dedupe_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, account, dedupe_id)
);

CREATE TABLE statements (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    day TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT,
    bytes BIGINT NOT NULL,
    fetched_at TEXT NOT NULL
);

CREATE TABLE recon_runs (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    statement_id TEXT NOT NULL REFERENCES statements (id),
    finished_at BIGINT NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX recon_runs_by_merchant ON recon_runs (merchant_id, finished_at);
CREATE INDEX recon_runs_by_day ON recon_runs (merchant_id, account_id, day, finished_at);

CREATE TABLE recon_breaks (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    category TEXT NOT NULL,
    kind TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    refund_id TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    note TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (merchant_id, account_id, day, category, kind, payment_id, refund_id)
);
CREATE INDEX recon_breaks_by_run ON recon_breaks (run_id);
CREATE INDEX recon_breaks_by_status ON recon_breaks (merchant_id, status, updated_at);

CREATE TABLE recon_claims (
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    holder TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (merchant_id, account_id, day)
);

CREATE TABLE checkouts (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    amount BIGINT NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    description TEXT NOT NULL,
    return_url TEXT NOT NULL,
    cancel_url TEXT,
    methods TEXT NOT NULL,
    openid TEXT,
    metadata TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    payment_id TEXT
);

CREATE TABLE checkout_payments (
    payment_id TEXT PRIMARY KEY,
    checkout_id TEXT NOT NULL REFERENCES checkouts (id),
    opened_at BIGINT NOT NULL
);
CREATE INDEX checkout_payments_by_checkout ON checkout_payments (checkout_id);
