// Package backoff computes reconnection delays for the gateway's Redis connections.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jitter is "full jitter" exponential backoff: uniform in [0, min(hi, lo*2^attempt)], so that
// instances reconnecting after one Redis outage spread out instead of arriving together.
func Jitter(lo, hi time.Duration, attempt int) time.Duration {
	ceil := hi
	if attempt < 32 {
		if d := lo << attempt; d > 0 && d < hi {
			ceil = d
		}
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}
