package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

// runHealthcheck is the container HEALTHCHECK: the image has no curl, so the binary checks
// itself.
func runHealthcheck(args []string) int {
	fs := flag.NewFlagSet("sse-gateway healthcheck", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "host:port of the gateway")
	path := fs.String("path", "/healthz", "path to check (/healthz or /readyz)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	tls := fs.Bool("tls", false, "use https (certificate not verified: this checks liveness, not identity)")
	if err := parseFlags(fs, args); err != nil {
		return 2
	}
	scheme := "http"
	if *tls {
		scheme = "https"
	}
	client := &http.Client{Timeout: *timeout, Transport: healthTransport(*tls)}
	resp, err := client.Get(scheme + "://" + *addr + *path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "unhealthy:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(os.Stderr, "unhealthy:", resp.Status)
		return 1
	}
	return 0
}

// healthTransport is the probe's transport; with insecure it does not verify the certificate.
func healthTransport(insecure bool) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a liveness probe of our own process
	}
	return t
}
