-- +goose Up
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL UNIQUE,   -- a redelivered event never notifies twice
    order_id   TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    channel    TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at    TIMESTAMPTZ
);
CREATE INDEX notifications_by_user ON notifications (user_id, created_at DESC, id DESC);

-- +goose Down
DROP TABLE notifications;
