package bench

import (
	"slices"
	"testing"
)

// TestGrowing holds the soak's verdict to what it claims: the first third
// of the samples may grow (caches and pools filling), the rest must not
// beyond a small slack, each resource judged on its own.
func TestGrowing(t *testing.T) {
	series := func(n int, at func(i int) Sample) []Sample {
		out := make([]Sample, n)
		for i := range out {
			out[i] = at(i)
		}
		return out
	}
	const mib = 1 << 20
	for _, c := range []struct {
		name    string
		samples []Sample
		want    []string
	}{
		{"fills its caches, then flat", series(12, func(i int) Sample {
			return Sample{RSS: int64(min(i, 4)) * 10 * mib, HeapGoal: 40 * mib, Goroutines: 100, OpenFiles: 30}
		}), nil},
		{"noise within the slack", series(12, func(i int) Sample {
			return Sample{RSS: 60*mib + int64(i%3)*mib, HeapGoal: 40*mib + int64(i%2)*3*mib, Goroutines: 100 + int64(i%4)*5, OpenFiles: 30 + int64(i%3)}
		}), nil},
		{"memory and goroutines still rising", series(12, func(i int) Sample {
			return Sample{RSS: 40*mib + int64(i)*5*mib, HeapGoal: 40 * mib, Goroutines: 100 + int64(i)*10, OpenFiles: 30}
		}), []string{"resident memory", "goroutines"}},
		{"the heap keeps more and more", series(12, func(i int) Sample {
			return Sample{RSS: 90 * mib, HeapGoal: 40*mib + int64(i)*2*mib, Goroutines: 100, OpenFiles: 30}
		}), []string{"Go heap"}},
		{"one sample caught in a burst", series(12, func(i int) Sample {
			x := Sample{RSS: 90 * mib, HeapGoal: 40 * mib, Goroutines: 120, OpenFiles: 70}
			if i == 11 {
				x.RSS, x.Goroutines, x.OpenFiles = 110*mib, 210, 140
			}
			return x
		}), nil},
		{"a file descriptor leak", series(9, func(i int) Sample {
			return Sample{RSS: 50 * mib, OpenFiles: 30 + 4*int64(i)}
		}), []string{"open files"}},
		{"too short to judge", series(5, func(i int) Sample { return Sample{RSS: int64(i) * 100 * mib} }), nil},
	} {
		if got := growing(c.samples); !slices.Equal(got, c.want) {
			t.Errorf("%s: growing() = %v, want %v", c.name, got, c.want)
		}
	}
}
