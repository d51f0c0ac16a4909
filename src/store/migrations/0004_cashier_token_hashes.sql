-- The ledger keeps a hash of each cashier token, not the token (tokens are now derived from
-- the checkout id with the cashier key). Checkouts from before keep working: their column
-- holds the SHA-256 of their random token, so links already handed out still open, and those
-- still open keep the token in legacy_token until they expire, so their link is still shown.
-- Checkout payments drop their stored copy of the link. (Events are append-only: those
-- recorded before keep the return_url they were sent with.)
ALTER TABLE checkouts RENAME COLUMN token TO token_hash;
ALTER TABLE checkouts ADD COLUMN legacy_token TEXT;
UPDATE checkouts
SET legacy_token = token_hash
WHERE expires_at > (extract(epoch FROM now()) * 1000)::bigint;
UPDATE checkouts SET token_hash = encode(sha256(convert_to(token_hash, 'UTF8')), 'hex');
UPDATE payments SET return_url = NULL
WHERE id IN (SELECT payment_id FROM checkout_payments);
