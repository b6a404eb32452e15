package sqldb_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/ds-blueprint/blueprint/internal/platform/sqldb"
)

func TestNewTime(t *testing.T) {
	t.Parallel()
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		in   time.Time
		want time.Time
	}{
		{name: "utc whole second", in: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), want: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)},
		{name: "nanoseconds truncated, not rounded", in: time.Date(2024, 1, 2, 3, 4, 5, 999_999_999, time.UTC), want: time.Date(2024, 1, 2, 3, 4, 5, 999_999_000, time.UTC)},
		{name: "other zone becomes utc", in: time.Date(2024, 1, 2, 4, 4, 5, 1_500, paris), want: time.Date(2024, 1, 2, 3, 4, 5, 1_000, time.UTC)},
		{name: "zero", in: time.Time{}, want: time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := sqldb.NewTime(tt.in)
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("NewTime(%v) = %v, want %v in UTC", tt.in, got.Time, tt.want)
			}
		})
	}
}

func TestTimeValueScanRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       sqldb.Time
		wantText string
	}{
		{name: "whole second", in: sqldb.NewTime(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)), wantText: "2024-01-02T03:04:05.000000Z"},
		{name: "microseconds", in: sqldb.NewTime(time.Date(2024, 12, 31, 23, 59, 59, 999_999_000, time.UTC)), wantText: "2024-12-31T23:59:59.999999Z"},
		{name: "one microsecond", in: sqldb.NewTime(time.Date(2024, 1, 1, 0, 0, 0, 1_000, time.UTC)), wantText: "2024-01-01T00:00:00.000001Z"},
		{name: "other zone", in: sqldb.NewTime(time.Date(2024, 6, 1, 2, 0, 0, 0, time.FixedZone("", -5*3600))), wantText: "2024-06-01T07:00:00.000000Z"},
		// Built without NewTime: Value still writes what NewTime would keep.
		{name: "nanoseconds without NewTime", in: sqldb.Time{Time: time.Date(2024, 1, 2, 3, 4, 5, 123_456_789, time.FixedZone("", 3600))}, wantText: "2024-01-02T02:04:05.123456Z"},
		{name: "zero", in: sqldb.Time{}, wantText: "0001-01-01T00:00:00.000000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := tt.in.Value()
			if err != nil || v != tt.wantText {
				t.Fatalf("Time(%v).Value() = %v, %v, want %q, nil", tt.in.Time, v, err, tt.wantText)
			}
			want := sqldb.NewTime(tt.in.Time)
			for _, src := range []any{tt.wantText, []byte(tt.wantText), want.In(time.FixedZone("", 9*3600))} {
				var got sqldb.Time
				if err := got.Scan(src); err != nil {
					t.Fatalf("Scan(%#v) = %v, want nil", src, err)
				}
				if !got.Equal(want.Time) || got.Location() != time.UTC {
					t.Errorf("Scan(%#v) = %v, want %v in UTC", src, got.Time, want.Time)
				}
			}
		})
	}
}

func TestTimeScanRejects(t *testing.T) {
	t.Parallel()
	for _, src := range []any{nil, int64(1700000000), 1.5, true, "", "yesterday", "2024-01-02 03:04:05", []byte("2024-13-01T00:00:00Z")} {
		var got sqldb.Time
		if err := got.Scan(src); err == nil {
			t.Errorf("Scan(%#v) = nil (time %v), want an error", src, got.Time)
		}
	}
}

// TestTimeTextSortsChronologically: SQLite compares TEXT byte by byte, and
// cursor pagination orders by created_at, so the text must sort like the
// instants it holds.
func TestTimeTextSortsChronologically(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	times := []time.Time{
		base, base.Add(time.Microsecond), base.Add(time.Second), base.Add(999_999 * time.Microsecond),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999_999_000, time.UTC),
		time.Date(2024, 1, 1, 0, 0, 0, 0, time.FixedZone("", 14*3600)),    // earlier than base
		time.Date(2023, 12, 31, 23, 0, 0, 0, time.FixedZone("", -2*3600)), // later than base
	}
	for range 500 {
		times = append(times, base.Add(time.Duration(rng.Int64N(int64(20*365*24*time.Hour)))-10*365*24*time.Hour))
	}
	var texts []string
	for _, tm := range times {
		v, err := sqldb.NewTime(tm).Value()
		if err != nil {
			t.Fatalf("Value(%v): %v", tm, err)
		}
		s := v.(string)
		if len(s) != len("2006-01-02T15:04:05.000000Z") {
			t.Errorf("Value(%v) = %q, want fixed width %d", tm, s, len("2006-01-02T15:04:05.000000Z"))
		}
		texts = append(texts, s)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	slices.Sort(texts)
	for i, s := range texts {
		var got sqldb.Time
		if err := got.Scan(s); err != nil {
			t.Fatalf("Scan(%q): %v", s, err)
		}
		if want := sqldb.NewTime(times[i]); !got.Equal(want.Time) {
			t.Fatalf("text order [%d] = %q, want %v: text sorts differently from time", i, s, want.Time)
		}
	}
}

func TestNullTime(t *testing.T) {
	t.Parallel()
	at := sqldb.NewTime(time.Date(2024, 3, 4, 5, 6, 7, 8_000, time.UTC))

	if v, err := (sqldb.NullTime{}).Value(); v != nil || err != nil {
		t.Errorf("NullTime{}.Value() = %v, %v, want nil, nil", v, err)
	}
	if v, err := (sqldb.NullTime{Time: at, Valid: true}).Value(); v != "2024-03-04T05:06:07.000008Z" || err != nil {
		t.Errorf("NullTime{%v, true}.Value() = %v, %v, want %q, nil", at.Time, v, err, "2024-03-04T05:06:07.000008Z")
	}

	var n sqldb.NullTime
	if err := n.Scan("2024-03-04T05:06:07.000008Z"); err != nil || !n.Valid || !n.Time.Equal(at.Time) {
		t.Errorf("Scan(text) = %v, %+v, want nil and a valid %v", err, n, at.Time)
	}
	if err := n.Scan(nil); err != nil || n.Valid {
		t.Errorf("Scan(nil) = %v, valid %v, want nil, false", err, n.Valid)
	}
	if err := n.Scan(42); err == nil {
		t.Errorf("Scan(42) = nil, want an error")
	}
}
