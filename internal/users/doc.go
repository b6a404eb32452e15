// Package users is the users service: it registers users, checks their
// credentials and serves their profiles. It owns the users database (one
// SQLite file in `all` mode, its own PostgreSQL database when deployed) and
// is reached only over HTTP with internal tokens: by the gateway, acting for
// a user, and by the notifications worker, looking up where to send.
//
// Passwords are hashed with argon2id. Checking credentials takes the same
// time whether or not the email exists, so the login endpoint cannot be used
// to find out who has an account.
package users
