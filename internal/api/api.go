// Package api serves the gateway's non-stream HTTP endpoints: the admin publish API and the
// health and readiness probes.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/httperr"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// Publisher publishes a validated payload on a channel through the broker, so that with
// Redis it reaches every instance. It reports false when the payload was not newer than the
// channel's stored newest event (and so was not published).
type Publisher interface {
	Publish(ctx context.Context, channel string, p wire.Payload) (bool, error)
}

// publishTimeout bounds one publish to the broker.
const publishTimeout = 5 * time.Second

// Publish serves POST /v1/publish: {"channel":"...","data":{...inner payload...}} with
// "Authorization: Bearer <admin token>".
type Publish struct {
	// Broker publishes the event.
	Broker Publisher
	// Token is the admin bearer token; requests without it get 401.
	Token string
	// MaxPayload bounds the inner payload (0: wire.DefaultMaxPayload).
	MaxPayload int
	// MaxClockSkew is how far ahead of this instance's clock a payload's lastModified may
	// be: a later one gets 400 (0 checks nothing).
	MaxClockSkew time.Duration
	// ClientAddr is the address wrong tokens are counted by (the gateway's: behind trusted
	// proxies, the forwarded client; an IPv6 /64 as one). Nil: the peer's address.
	ClientAddr func(*http.Request) netip.Addr

	failures authFailures
}

// Authorized reports whether r carries the admin token. The comparison is on fixed-length
// hashes in constant time, so neither the token nor its length leaks through timing.
func Authorized(r *http.Request, token string) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (p *Publish) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	addr, now := p.clientAddr(r), time.Now()
	if wait, blocked := p.failures.blocked(addr, now); blocked {
		// Not even checked: a right guess must look no different from a wrong one.
		w.Header().Set("Retry-After", strconv.Itoa(wait))
		httperr.Write(w, http.StatusTooManyRequests, "too many wrong admin tokens from this address, retry later")
		return
	}
	if !Authorized(r, p.Token) {
		p.failures.fail(addr, now)
		w.Header().Set("WWW-Authenticate", `Bearer realm="sse-gateway"`)
		httperr.Write(w, http.StatusUnauthorized, "missing or wrong admin token")
		return
	}
	max := p.MaxPayload
	if max <= 0 {
		max = wire.DefaultMaxPayload
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(max)+4096))
	if err != nil {
		httperr.Write(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	var req struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(&req)
	if err == nil && dec.More() {
		err = errors.New("data after the JSON object")
	}
	if err == nil {
		// Decode stops at the end of the object; anything but white space after it is a
		// body that was not one JSON object.
		if _, tokErr := dec.Token(); tokErr != io.EOF {
			err = errors.New("data after the JSON object")
		}
	}
	if err != nil {
		httperr.Write(w, http.StatusBadRequest, "body must be {\"channel\":\"...\",\"data\":{...}}: "+err.Error())
		return
	}
	if !wire.ValidChannel(req.Channel) {
		httperr.Write(w, http.StatusBadRequest, "invalid channel name")
		return
	}
	payload, err := wire.ParsePayload(req.Data, max)
	if err == nil {
		err = payload.CheckClock(time.Now(), p.MaxClockSkew)
	}
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, wire.ErrTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		httperr.Write(w, status, err.Error())
		return
	}
	// Bounded, so that a publisher hears 503 and retries while Redis fails over, rather than
	// waiting out the client's retries against a node that froze.
	ctx, cancel := context.WithTimeout(r.Context(), publishTimeout)
	published, err := p.Broker.Publish(ctx, req.Channel, payload)
	cancel()
	if errors.Is(err, store.ErrConflict) {
		httperr.Write(w, http.StatusConflict, err.Error())
		return
	}
	if err != nil {
		// The caller retries: a publish is idempotent (its version decides), and a Redis
		// failover lasts seconds.
		w.Header().Set("Retry-After", "1")
		httperr.Write(w, http.StatusServiceUnavailable, "broker unavailable, not published: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	status := http.StatusAccepted
	if !published {
		// Not newer than what the channel already has: accepted, nothing to send.
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		ID        string `json:"id"`
		Published bool   `json:"published"`
	}{payload.ID(), published})
}

func (p *Publish) clientAddr(r *http.Request) netip.Addr {
	if p.ClientAddr != nil {
		return p.ClientAddr(r)
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Health serves /healthz (the process is alive) and /readyz (it should get traffic).
type Health struct {
	// Ready reports readiness; nil means always ready.
	Ready func() bool
}

// Live answers 200 while the process can serve HTTP at all.
func (h *Health) Live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
}

// Readiness answers 200 while ready and 503 otherwise (broker subscription down, draining).
func (h *Health) Readiness(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if h.Ready != nil && !h.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"status":"not ready"}`+"\n")
		return
	}
	_, _ = io.WriteString(w, `{"status":"ready"}`+"\n")
}
