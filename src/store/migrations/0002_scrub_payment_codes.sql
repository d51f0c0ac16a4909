-- Settled payments keep no scanned payment code (a bearer credential of the payer's wallet):
-- payments settled before Moongate stopped keeping them lose theirs here, once.
UPDATE payments
SET payer = (payer::jsonb - 'payment_code')::text
WHERE payer LIKE '%"payment_code"%'
  AND status NOT IN ('pending', 'unknown', 'requires_action');
