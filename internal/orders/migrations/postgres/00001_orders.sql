-- +goose Up
CREATE TABLE orders (
    id         TEXT PRIMARY KEY,           -- UUIDv7: sorts in creation order
    user_id    TEXT NOT NULL,
    sku        TEXT NOT NULL,
    qty        INTEGER NOT NULL CHECK (qty BETWEEN 1 AND 1000),
    status     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
-- Serves "the caller's orders, newest first" and its cursor in one seek.
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);

-- One row per (user, Idempotency-Key), kept 24 hours. While a request runs
-- the row is locked (locked_until in the future); when it ends the row holds
-- the response that every replay returns.
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    order_id     TEXT,
    response     TEXT,
    locked_until TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

-- The transactional outbox (see internal/platform/outbox). Several orders
-- replicas share it: a relay leases rows (claimed_by, claimed_until) with
-- FOR UPDATE SKIP LOCKED, and sent_by records which one published each.
CREATE TABLE outbox (
    id            TEXT PRIMARY KEY,        -- event id, also the Nats-Msg-Id
    subject       TEXT NOT NULL,
    payload       BYTEA NOT NULL,
    headers       TEXT NOT NULL,           -- trace context of the request, JSON
    created_at    TIMESTAMPTZ NOT NULL,
    sent_at       TIMESTAMPTZ,
    sent_by       TEXT,
    claimed_by    TEXT,
    claimed_until TIMESTAMPTZ,
    attempts      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (id) WHERE sent_at IS NULL;

-- +goose Down
DROP TABLE outbox;
DROP TABLE idempotency_keys;
DROP TABLE orders;
