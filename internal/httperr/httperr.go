// Package httperr writes the gateway's one error response shape, a JSON {"error":"..."} body,
// for every HTTP endpoint (streams, the publish API, the router's 404 and 405), so that those
// packages share it without importing one another.
package httperr

import (
	"encoding/json"
	"net/http"
)

// Write answers with status and the body {"error": msg}, not cacheable and not sniffable.
func Write(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error string `json:"error"`
	}{msg})
}
