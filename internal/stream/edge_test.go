package stream

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// silentStore never answers, like a store behind a dead network: Seed records the call and
// nothing is ever seeded.
type silentStore struct{ calls chan struct{} }

func (b silentStore) Seed([]string) {
	select {
	case b.calls <- struct{}{}:
	default:
	}
}

// TestSeedNeverDelaysStream: a store that never answers delays nothing: the stream is open
// and receives what is published.
func TestSeedNeverDelaysStream(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			st := silentStore{calls: make(chan struct{}, 1)}
			e := startEnv(t, m, Config{Heartbeat: time.Hour},
				func(e *env, _ *Config) { e.storeOverride = st })
			s := e.connect(e.url(secretAll, "c"), nil)
			<-st.calls
			msg := e.publish("c", 3, "")
			s.waitLast(msg.ID)
			if ids := s.ids(); len(ids) != 1 {
				t.Fatalf("ids %v", ids)
			}
		})
	}
}

// TestPerIPBehindTrustedProxy: behind a trusted proxy the per-address limit applies to the
// address the proxy vouches for, not to the proxy.
func TestPerIPBehindTrustedProxy(t *testing.T) {
	e := startEnv(t, modes[0], Config{MaxStreamsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {a}} }
	e.connect(e.url(secretAll, "c"), xff("192.0.2.1"))
	e.connect(e.url(secretAll, "c"), xff("192.0.2.2"))
	if _, status, _ := e.tryConnect(e.url(secretAll, "c"), xff("198.51.100.7, 192.0.2.1")); status != http.StatusTooManyRequests {
		t.Fatalf("second stream of 192.0.2.1: %d, want 429", status)
	}
	if _, status, _ := e.tryConnect(e.url(secretAll, "c"), nil); status != http.StatusOK {
		t.Fatalf("the proxy's own address: %d, want 200", status)
	}
}

// TestPerIPCountsIPv6Prefix: an IPv6 client owns a whole /64, so the per-address limit counts
// the prefix; IPv4 addresses (and IPv4-mapped ones) count alone.
func TestPerIPCountsIPv6Prefix(t *testing.T) {
	e := startEnv(t, modes[0], Config{MaxStreamsPerIP: 1, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	xff := func(a string) http.Header { return http.Header{"X-Forwarded-For": {a}} }
	e.connect(e.url(secretAll, "c"), xff("2001:db8:0:1::1"))
	if _, status, _ := e.tryConnect(e.url(secretAll, "c"), xff("2001:db8:0:1:8000::2")); status != http.StatusTooManyRequests {
		t.Fatalf("a second address of the same /64: %d, want 429", status)
	}
	e.connect(e.url(secretAll, "c"), xff("2001:db8:0:2::1"))
	e.connect(e.url(secretAll, "c"), xff("::ffff:192.0.2.1"))
	e.connect(e.url(secretAll, "c"), xff("192.0.2.2"))
}
