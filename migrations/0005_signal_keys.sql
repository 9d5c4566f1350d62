-- Idempotent signals: a signal sent with an Idempotency-Key header is recorded once per flow and
-- key; a repeat (a client's retry, or a forwarding node's retry after an unknown outcome) gets
-- the first one's answer.
ALTER TABLE signals ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX signals_idempotency ON signals (flow_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
