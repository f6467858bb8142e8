package api

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Failed authentications allowed per client address: a burst, then one per second. A
// publisher with the token never fails, so it never meets the limit unless it shares its
// address with whoever is guessing.
const (
	authFailBurst  = 10
	authFailRate   = rate.Limit(1)
	authFailMaxIPs = 10000 // addresses tracked at once; see fail
)

// authFailures rate-limits wrong admin tokens per client address, so a token cannot be
// guessed at the speed of the network. Safe for concurrent use.
type authFailures struct {
	mu sync.Mutex
	by map[netip.Addr]*rate.Limiter // guarded by mu: addresses that sent a wrong token
}

// blocked reports whether addr used up its failures, and if so in how many seconds it may
// try again. It does not count an attempt.
func (f *authFailures) blocked(addr netip.Addr, now time.Time) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.by[addr]
	if l == nil || l.TokensAt(now) >= 1 {
		return 0, false
	}
	wait := time.Duration((1 - l.TokensAt(now)) / float64(authFailRate) * float64(time.Second))
	return max(1, int((wait+time.Second-1)/time.Second)), true
}

// fail counts a wrong token from addr.
func (f *authFailures) fail(addr netip.Addr, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = make(map[netip.Addr]*rate.Limiter)
	}
	l := f.by[addr]
	if l == nil {
		if len(f.by) >= authFailMaxIPs {
			// Bounded memory: forget the addresses whose budget is whole again; if every
			// one is still guessing, start over rather than grow.
			for a, old := range f.by {
				if old.TokensAt(now) >= authFailBurst {
					delete(f.by, a)
				}
			}
			if len(f.by) >= authFailMaxIPs {
				clear(f.by)
			}
		}
		l = rate.NewLimiter(authFailRate, authFailBurst)
		f.by[addr] = l
	}
	l.AllowN(now, 1)
}
