package api

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Wrong admin tokens are limited per client address: a burst of 10, then one a second;
// while blocked even the right token is refused (a right guess must look like a wrong one),
// other addresses are not affected, and the budget comes back with time.
func TestWrongTokensRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := &fakeBroker{}
		h := &Publish{Broker: b, Token: token}
		post := func(from, tok string, lm int) *httptest.ResponseRecorder {
			body := `{"channel":"c","data":{"etag":"\"e\"","lastModified":` + strconv.Itoa(lm) + `}}`
			req := httptest.NewRequest(http.MethodPost, "/v1/publish", strings.NewReader(body))
			req.RemoteAddr = from + ":1234"
			req.Header.Set("Authorization", "Bearer "+tok)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			return w
		}
		for i := range authFailBurst {
			if w := post("192.0.2.1", "guess", 0); w.Code != http.StatusUnauthorized {
				t.Fatalf("wrong token %d: %d, want 401", i, w.Code)
			}
		}
		w := post("192.0.2.1", token, 1)
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
			t.Fatalf("after %d wrong tokens: %d Retry-After %q, want 429 and 1", authFailBurst, w.Code, w.Header().Get("Retry-After"))
		}
		if w := post("192.0.2.2", token, 2); w.Code != http.StatusAccepted {
			t.Fatalf("another address with the token: %d, want 202", w.Code)
		}
		time.Sleep(time.Second)
		if w := post("192.0.2.1", "guess", 0); w.Code != http.StatusUnauthorized {
			t.Fatalf("a second later: %d, want one more try (401)", w.Code)
		}
		if w := post("192.0.2.1", token, 3); w.Code != http.StatusTooManyRequests {
			t.Fatalf("right after that try: %d, want 429", w.Code)
		}
		time.Sleep(time.Second)
		if w := post("192.0.2.1", token, 4); w.Code != http.StatusAccepted {
			t.Fatalf("the token once the budget is back: %d, want 202", w.Code)
		}
	})
}

// The failures are remembered for a bounded number of addresses.
func TestWrongTokensBoundedMemory(t *testing.T) {
	var f authFailures
	now := time.Now()
	for i := range authFailMaxIPs + 10 {
		f.fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := len(f.by); n > authFailMaxIPs {
		t.Fatalf("%d addresses tracked, want at most %d", n, authFailMaxIPs)
	}
}
