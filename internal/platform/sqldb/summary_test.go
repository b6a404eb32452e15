package sqldb

import (
	"testing"

	"github.com/XSAM/otelsql"
)

func TestSummarize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		method otelsql.Method
		query  string
		want   statement
	}{
		{otelsql.MethodConnQuery, `SELECT id, email FROM users WHERE id = $1`, statement{"SELECT", "users"}},
		{otelsql.MethodConnQuery, "\n\tselect count(*) from notifications", statement{"SELECT", "notifications"}},
		{otelsql.MethodConnExec, `INSERT INTO outbox (id, subject) VALUES ($1, $2)`, statement{"INSERT", "outbox"}},
		{otelsql.MethodConnQuery, `UPDATE outbox SET claimed_by = $1 WHERE id IN (SELECT id FROM outbox)`, statement{"UPDATE", "outbox"}},
		{otelsql.MethodStmtExec, `DELETE FROM idempotency_keys WHERE expires_at < $1`, statement{"DELETE", "idempotency_keys"}},
		{otelsql.MethodConnExec, `CREATE TABLE items (id INTEGER)`, statement{"CREATE", ""}},
		{otelsql.MethodConnBeginTx, "", statement{"BEGIN", ""}},
		{otelsql.MethodTxCommit, "", statement{"COMMIT", ""}},
		{otelsql.MethodTxRollback, "", statement{"ROLLBACK", ""}},
		{otelsql.MethodRows, "", statement{}},
		{otelsql.MethodConnQuery, `$1`, statement{}},
	}
	for _, tt := range tests {
		if got := summarize(tt.method, tt.query); got != tt.want {
			t.Errorf("summarize(%s, %q) = %+v, want %+v", tt.method, tt.query, got, tt.want)
		}
	}
}
