-- Open payments and refunds are found through the partial payments_due / refunds_due indexes
-- (only open rows): an index of every row's status, moved on each status change, costs every
-- payment a write and serves nothing the partial ones do not.
DROP INDEX IF EXISTS payments_by_status;
DROP INDEX IF EXISTS refunds_by_status;
