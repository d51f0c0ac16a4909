-- The webhook claim walks the outbox merchant by merchant (one index seek each, however long
-- one merchant's backlog), instead of ranking every due row.
CREATE INDEX outbox_due_by_merchant ON outbox (merchant_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
DROP INDEX outbox_due;
