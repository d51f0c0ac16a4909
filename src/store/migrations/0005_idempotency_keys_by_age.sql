-- Keys past their retention, oldest first (the janitor's purge, in slices).
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
