package stream

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// setCORS adds credentials-enabled CORS headers for an allowed Origin. Browser SDKs open
// streams with withCredentials: true, and browsers reject a wildcard origin for those, so
// the origin is always echoed.
func (s *Server) setCORS(h http.Header, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || !s.originAllowed(origin) {
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
}

func (s *Server) originAllowed(origin string) bool {
	if len(origin) > 512 || strings.ContainsAny(origin, "\r\n") {
		return false
	}
	return s.anyOrigin || s.origins[origin]
}

// preflight answers CORS preflight requests. EventSource itself never sends one, but
// polyfills that add headers do.
func (s *Server) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	s.setCORS(h, r)
	if h.Get("Access-Control-Allow-Origin") != "" {
		h.Set("Access-Control-Allow-Methods", "GET, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Last-Event-ID, Cache-Control, Accept")
		h.Set("Access-Control-Max-Age", "600")
	}
	w.WriteHeader(http.StatusNoContent)
}

// corsHeaderLines renders the CORS headers for a stream written outside net/http.
func corsHeaderLines(h http.Header) string {
	var b strings.Builder
	for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Vary"} {
		if v := h.Get(k); v != "" {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	return b.String()
}

// clientIP is the peer address, or the X-Forwarded-For entry that a trusted proxy vouches
// for: walking the list from the right, the first address that is not itself a trusted proxy.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	peer := addrOf(r.RemoteAddr)
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
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
