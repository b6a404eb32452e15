-- +goose Up
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,          -- as the user typed it, returned as given
    email_lower   TEXT NOT NULL UNIQUE,   -- what uniqueness and login compare
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,          -- argon2id, PHC string format
    plan          TEXT NOT NULL DEFAULT 'free',
    created_at    TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE users;
