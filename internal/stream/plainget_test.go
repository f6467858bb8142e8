package stream

import (
	"bufio"
	"bytes"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

const testPath = "/event-stream"

// sdkRequests are stream requests as real clients send them (the DevCycle SDKs' EventSource
// implementations, Chromium, r3labs/sse's client, curl); the plain path must read each.
var sdkRequests = []string{
	"GET /event-stream?v=1.2&key=k&channels=dvc_client_a HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
	"GET /event-stream?v=1.2&key=k&channels=a,b HTTP/1.1\r\nHost: gw.example.com\r\nUser-Agent: Go-http-client/1.1\r\n" +
		"Accept: text/event-stream\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\nLast-Event-ID: 1700000000000-0\r\nAccept-Encoding: gzip\r\n\r\n",
	"GET /event-stream?key=k&channels=a HTTP/1.1\r\nhost: [::1]:9000\r\nconnection: Keep-Alive\r\norigin: https://app.example.com\r\n" +
		"accept: text/event-stream\r\ncookie: a=b; c=d\r\n\r\n",
	"GET /event-stream?key=k&channels=a HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-For:10.0.0.3\r\n\r\n",
}

func TestPlainGetReadsSDKRequests(t *testing.T) {
	for _, raw := range sdkRequests {
		g, ok := parsePlainGet([]byte(raw), testPath)
		if !ok {
			t.Errorf("not read: %q", raw)
			continue
		}
		checkAgainstNetHTTP(t, []byte(raw), g)
	}
	g, _ := parsePlainGet([]byte(sdkRequests[3]), testPath)
	if want := []string{"10.0.0.1, 10.0.0.2", "10.0.0.3"}; !slices.Equal(g.forwardedFor, want) {
		t.Errorf("X-Forwarded-For %q, want %q", g.forwardedFor, want)
	}
	g, _ = parsePlainGet([]byte(sdkRequests[2]), testPath)
	if g.origin != "https://app.example.com" || g.query != "key=k&channels=a" {
		t.Errorf("origin %q query %q", g.origin, g.query)
	}
}

// TestPlainGetLeavesTheRestToNetHTTP: every request that is not the plain form goes to
// net/http, which answers it as before (hostile-input tests run through both paths).
func TestPlainGetLeavesTheRestToNetHTTP(t *testing.T) {
	ok := "GET /event-stream?key=k&channels=a HTTP/1.1\r\nHost: h\r\n\r\n"
	for name, raw := range map[string]string{
		"incomplete":         strings.TrimSuffix(ok, "\r\n"),
		"pipelined":          ok + "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"HEAD":               strings.Replace(ok, "GET", "HEAD", 1),
		"OPTIONS":            strings.Replace(ok, "GET", "OPTIONS", 1),
		"lower-case method":  strings.Replace(ok, "GET", "get", 1),
		"HTTP/1.0":           strings.Replace(ok, "HTTP/1.1", "HTTP/1.0", 1),
		"HTTP/2 preface":     "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"other path":         strings.Replace(ok, "/event-stream", "/event-streams", 1),
		"escaped path":       strings.Replace(ok, "/event-stream", "/event%2Dstream", 1),
		"absolute form":      strings.Replace(ok, "/event-stream", "http://h/event-stream", 1),
		"fragment":           strings.Replace(ok, "channels=a", "channels=a#x", 1),
		"no Host":            "GET /event-stream?key=k&channels=a HTTP/1.1\r\n\r\n",
		"two Hosts":          strings.Replace(ok, "\r\n\r\n", "\r\nHost: h2\r\n\r\n", 1),
		"bad Host":           strings.Replace(ok, "Host: h", "Host: h/x", 1),
		"bare LF":            strings.Replace(ok, "\r\nHost", "\nHost", 1),
		"folded header":      strings.Replace(ok, "\r\n\r\n", "\r\nX-A: a\r\n b\r\n\r\n", 1),
		"space before colon": strings.Replace(ok, "Host: h", "Host : h", 1),
		"no colon":           strings.Replace(ok, "\r\n\r\n", "\r\nX-A\r\n\r\n", 1),
		"NUL in value":       strings.Replace(ok, "Host: h", "Host: h\r\nX-A: a\x00b", 1),
		"non-ASCII value":    strings.Replace(ok, "Host: h", "Host: h\r\nX-A: \xc3\xa9", 1),
		"body":               strings.Replace(ok, "\r\n\r\n", "\r\nContent-Length: 1\r\n\r\n", 1),
		"chunked":            strings.Replace(ok, "\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n", 1),
		"upgrade":            strings.Replace(ok, "\r\n\r\n", "\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", 1),
		"connection close":   strings.Replace(ok, "\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1),
		"expect":             strings.Replace(ok, "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1),
		"TLS client hello":   "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	} {
		if _, accepted := parsePlainGet([]byte(raw), testPath); accepted {
			t.Errorf("%s: read by the plain path: %q", name, raw)
		}
	}
}

// FuzzPlainGetAgreesWithNetHTTP: whatever the plain path reads, net/http reads too (as its
// server would accept it), and the same way.
func FuzzPlainGetAgreesWithNetHTTP(f *testing.F) {
	for _, raw := range sdkRequests {
		f.Add([]byte(raw))
	}
	f.Add([]byte("GET /event-stream HTTP/1.1\r\nHost:\r\n\r\n"))
	f.Add([]byte("GET /event-stream?key=%zz&channels=a HTTP/1.1\r\nHost: h\r\nOrigin:\r\nOrigin: o\r\nLast-Event-ID: \t1 \r\n\r\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		g, ok := parsePlainGet(raw, testPath)
		if ok {
			checkAgainstNetHTTP(t, raw, g)
		}
	})
}

// checkAgainstNetHTTP fails unless net/http's server would read raw as the same plain GET.
func checkAgainstNetHTTP(t *testing.T, raw []byte, g plainGet) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	r, err := http.ReadRequest(br)
	if err != nil {
		t.Fatalf("read by the plain path, refused by net/http (%v): %q", err, raw)
	}
	// What net/http's server checks beyond ReadRequest (server.go readRequest), on the
	// header as read before ReadRequest takes Host out of it.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(raw)))
	_, _ = tp.ReadLine()
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("header: %v: %q", err, raw)
	}
	if hosts := hdr["Host"]; len(hosts) != 1 || !httpguts.ValidHostHeader(hosts[0]) || r.Host != hosts[0] {
		t.Fatalf("Host %q: net/http's server would refuse %q", hosts, raw)
	}
	for k, vv := range hdr {
		if !httpguts.ValidHeaderFieldName(k) {
			t.Fatalf("header name %q: net/http's server would refuse %q", k, raw)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				t.Fatalf("header value %q: net/http's server would refuse %q", v, raw)
			}
		}
	}
	if br.Buffered() != 0 {
		t.Fatalf("bytes after the request: %q", raw)
	}
	switch {
	case r.Method != http.MethodGet, r.ProtoMajor != 1, r.ProtoMinor != 1:
		t.Fatalf("method %q proto %q: %q", r.Method, r.Proto, raw)
	case r.URL.Path != testPath || r.URL.RawQuery != g.query:
		t.Fatalf("path %q query %q, plain path read query %q: %q", r.URL.Path, r.URL.RawQuery, g.query, raw)
	case r.ContentLength != 0 || len(r.TransferEncoding) != 0 || r.Close:
		t.Fatalf("body or close: %q", raw)
	case r.Header.Get("Origin") != g.origin:
		t.Fatalf("Origin %q, plain path read %q: %q", r.Header.Get("Origin"), g.origin, raw)
	case !slices.Equal(r.Header.Values("Last-Event-ID"), g.lastEventID):
		t.Fatalf("Last-Event-ID %q, plain path read %q: %q", r.Header.Values("Last-Event-ID"), g.lastEventID, raw)
	case !slices.Equal(r.Header.Values("X-Forwarded-For"), g.forwardedFor):
		t.Fatalf("X-Forwarded-For %q, plain path read %q: %q", r.Header.Values("X-Forwarded-For"), g.forwardedFor, raw)
	case r.Header.Get("Upgrade") != "" || r.Header.Get("Expect") != "":
		t.Fatalf("upgrade or expect: %q", raw)
	}
}
