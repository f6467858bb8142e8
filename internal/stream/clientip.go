package stream

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP is the peer address, or the X-Forwarded-For entry that a trusted proxy vouches
// for (see forwardedClient).
func (s *Server) clientIP(r *http.Request) netip.Addr {
	return s.forwardedClient(addrOf(r.RemoteAddr), r.Header.Values("X-Forwarded-For"))
}

// forwardedClient is peer, or if peer is a trusted proxy, the client its X-Forwarded-For
// values vouch for: walking the list from the right, the first address that is not itself a
// trusted proxy.
func (s *Server) forwardedClient(peer netip.Addr, forwardedFor []string) netip.Addr {
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(forwardedFor, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a
		}
	}
	return peer
}

// ClientAddr is the address that per-client limits count a request by: the client's address
// (see clientIP) for IPv4, and its /64 for IPv6, the prefix one subscriber is given, so that
// a client cannot count as many by changing the low bits of its address.
func (s *Server) ClientAddr(r *http.Request) netip.Addr {
	return limitKey(s.clientIP(r))
}

// limitKey is what per-address limits count an address as: itself, or its /64 for IPv6.
func limitKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func addrOf(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}
