package backoff

import (
	"testing"
	"time"
)

func TestJitterStaysUnderTheCeiling(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for attempt := range 40 {
		ceil := min(hi, lo<<min(attempt, 20))
		for range 100 {
			if d := Jitter(lo, hi, attempt); d < 0 || d > ceil {
				t.Fatalf("Jitter(attempt %d) = %v, want within [0, %v]", attempt, d, ceil)
			}
		}
	}
	if d := Jitter(0, 0, 3); d != 0 {
		t.Fatalf("Jitter with a zero ceiling = %v", d)
	}
}
