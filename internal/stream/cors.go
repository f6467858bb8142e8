package stream

import (
	"net/http"
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
	if len(origin) > 512 || strings.ContainsAny(origin, "\r\n") || origin == "null" {
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

// corsLines renders the CORS header lines setCORS would add for origin, for a response
// written outside net/http: none when origin is not allowed.
func (s *Server) corsLines(origin string) string {
	if origin == "" || !s.originAllowed(origin) {
		return ""
	}
	return "Access-Control-Allow-Origin: " + origin + "\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n"
}
