package reliability

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// openHeld sends a stream request from source with extra header lines and returns the
// status; a 200 stream is held open, unread, until the test ends.
func openHeld(t *testing.T, addr, source, target string, headers ...string) (int, http.Header) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	req := "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\n" + strings.Join(append(headers, ""), "\r\n") + "\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
	}
	return resp.StatusCode, resp.Header
}

// TestEdgeLimits (issue 10, item 11) against the binary: the per-address stream limit
// counts an IPv6 /64 as one client (one subscriber's prefix), an empty --allowed-origins
// allows no origin and `Origin: null` is never echoed, and wrong admin tokens on POST
// /v1/publish are rate-limited per client address. Before: every address of a /64 had its
// own limit, an empty list allowed every origin, `null` was echoed, and a token could be
// guessed at full speed (401 after 401).
func TestEdgeLimits(t *testing.T) {
	t.Parallel()
	r := startRedis(t)

	t.Run("per-ip-ipv6-prefix", func(t *testing.T) {
		t.Parallel()
		// Behind a trusted proxy, the client address is the X-Forwarded-For entry.
		g := startGateway(t, "edge-ip", r.URL(), "--max-streams-per-ip", "2", "--trusted-proxies", "127.0.0.0/8")
		xff := func(a string) string { return "X-Forwarded-For: " + a }
		var got []int
		for _, a := range []string{"2001:db8:1:2::a", "2001:db8:1:2:ffff::b", "2001:db8:1:2::c", "2001:db8:1:3::a", "192.0.2.1", "192.0.2.2"} {
			s, _ := openHeld(t, g.Addr, source(0), streamPath("edge"), xff(a))
			got = append(got, s)
		}
		want := []int{200, 200, 429, 200, 200, 200}
		t.Logf("--max-streams-per-ip 2, streams from 2001:db8:1:2::a, 2001:db8:1:2:ffff::b, 2001:db8:1:2::c (one /64), 2001:db8:1:3::a, 192.0.2.1, 192.0.2.2: %v", got)
		if !slices.Equal(got, want) {
			t.Errorf("statuses %v, want %v: the third address of one IPv6 /64 is over the limit, other prefixes and IPv4 addresses are not", got, want)
		}
	})

	t.Run("cors", func(t *testing.T) {
		t.Parallel()
		none := startGateway(t, "edge-cors-none", r.URL(), "--allowed-origins", "")
		anyOrigin := startGateway(t, "edge-cors-any", r.URL()) // the default: *
		for _, tc := range []struct {
			g      *gateway
			origin string
			echo   bool
		}{
			{none, "https://app.example", false},
			{anyOrigin, "https://app.example", true},
			{anyOrigin, "null", false},
			{none, "null", false},
		} {
			s, h := openHeld(t, tc.g.Addr, source(1), streamPath("edge"), "Origin: "+tc.origin)
			acao := h.Get("Access-Control-Allow-Origin")
			t.Logf("gateway %s, Origin %s: %d, Access-Control-Allow-Origin %q", tc.g.name, tc.origin, s, acao)
			if s != http.StatusOK || (acao != "") != tc.echo || (tc.echo && acao != tc.origin) {
				t.Errorf("gateway %s, Origin %q: %d with Access-Control-Allow-Origin %q, want it echoed: %v", tc.g.name, tc.origin, s, acao, tc.echo)
			}
		}
	})

	t.Run("publish-auth-rate", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, "edge-auth", r.URL())
		post := func(src, token string) (int, http.Header) {
			body := `{"channel":"edge","data":` + payload(`"a"`, time.Now().UnixMilli(), 0, false) + `}`
			a := rawRequest(g.Addr, src, "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+token+
				"\r\nContent-Type: application/json\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
			return a.status, a.header
		}
		counts := map[int]int{}
		var retryAfter string
		for i := range 50 {
			s, h := post(source(2), "guess-"+strconv.Itoa(i))
			counts[s]++
			if s == http.StatusTooManyRequests {
				retryAfter = h.Get("Retry-After")
			}
		}
		t.Logf("50 wrong tokens from one address: %v (Retry-After %q)", counts, retryAfter)
		if counts[http.StatusTooManyRequests] < 30 || counts[http.StatusAccepted] > 0 {
			t.Errorf("50 wrong tokens from one address: %v, want most of them refused with 429", counts)
		}
		if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 {
			t.Errorf("429 with Retry-After %q", retryAfter)
		}
		if s, _ := post(source(3), adminToken); s != http.StatusAccepted {
			t.Errorf("the right token from another address: %d, want 202", s)
		}
	})
}
