package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/gwtest"
	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// TestRedisOverTLS is --redis-url's "rediss:// for TLS", against a real redis-server that
// speaks only TLS on the port the gateway is given, with a certificate from a private CA the
// gateway is told to trust with SSL_CERT_FILE (Go's standard way on Linux; the container
// image's CA bundle covers public CAs). With it the gateway subscribes, is ready and
// delivers a publish made with `sse-gateway publish --redis-url rediss://...`; without it the
// gateway refuses the certificate and stays not ready.
func TestRedisOverTLS(t *testing.T) {
	t.Parallel()
	certs := gwtest.NewCerts(t)
	caFile, certFile, keyFile := certs.CAFile, certs.CertFile, certs.KeyFile
	tlsPort := redistest.FreePort(t)
	redistest.Start(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile, "--tls-auth-clients", "no")
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"
	trust := []string{"SSL_CERT_FILE=" + caFile}
	c := newClient(t)

	gw := startChild(t, 0, trust, "serve", "--addr", "127.0.0.1:0", "--redis-url", url, "--keys-file", writeKeysFile(t),
		"--admin-token", testAdminToken, "--drain", "100ms", "--heartbeat", "1s")
	rec, _ := gw.waitRecord("listening", 0)
	g := &testGateway{t: t, addr: rec["addr"].(string), scheme: "http"}
	g.waitReady(c)
	s := mustOpen(t, c, g.streamURL(testKeys["k1"], "tls"))
	defer s.Close()
	if out, errOut := runCommandEnv(t, 0, trust, "publish", "--redis-url", url, "--channel", "tls", "--etag", `"over-tls"`); !strings.HasPrefix(out, "published") {
		t.Fatalf("publish over rediss://: %q %q", out, errOut)
	}
	if d := s.data(t, waitLimit); !strings.Contains(d, "over-tls") {
		t.Fatalf("stream got %q, want the event published over TLS", d)
	}

	// The certificate is checked: without the CA the gateway does not connect.
	untrusted := startChild(t, 0, nil, "serve", "--addr", "127.0.0.1:0", "--redis-url", url, "--keys-file", writeKeysFile(t),
		"--admin-token", testAdminToken, "--drain", "100ms")
	rec, _ = untrusted.waitRecord("listening", 0)
	u := &testGateway{t: t, addr: rec["addr"].(string), scheme: "http"}
	waitFor(t, waitLimit, "the untrusting gateway to log the unknown authority", func() bool {
		return strings.Contains(strings.Join(untrusted.log(), "\n"), "certificate signed by unknown authority")
	})
	if code := status(t, c, u.url("/readyz")); code == 200 {
		t.Fatalf("/readyz 200 on a gateway that cannot verify Redis's certificate")
	}
}
