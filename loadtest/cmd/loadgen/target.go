package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// loopbackHostPort checks that rawURL points at 127.0.0.0/8 (or "localhost")
// and returns its host:port with an IP literal. The generator refuses anything
// else: it is a tool to load your own machine, not someone else's.
func loopbackHostPort(rawURL, defaultPort string) (string, *url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", nil, fmt.Errorf("parse %q: %w", rawURL, err)
	}
	host := u.Hostname()
	if host == "" {
		return "", nil, fmt.Errorf("%q has no host", rawURL)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Is4() || ip.As4()[0] != 127 {
		return "", nil, fmt.Errorf("target %q is not in 127.0.0.0/8: the load generator only loads the local machine", u.Host)
	}
	port := u.Port()
	if port == "" {
		port = defaultPort
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", nil, fmt.Errorf("bad port in %q", rawURL)
	}
	return net.JoinHostPort(ip.String(), port), u, nil
}

// streamRequest builds the raw HTTP/1.1 request for one channel. base is the
// --url (path and query, e.g. key=...), the generator adds channels=<name>.
func streamRequest(base *url.URL, hostHeader, channel string) []byte {
	q := base.Query()
	q.Set("channels", channel)
	path := base.EscapedPath()
	if path == "" {
		path = "/"
	}
	var b strings.Builder
	b.WriteString("GET ")
	b.WriteString(path)
	b.WriteString("?")
	b.WriteString(q.Encode())
	b.WriteString(" HTTP/1.1\r\nHost: ")
	b.WriteString(hostHeader)
	b.WriteString("\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\nUser-Agent: sse-gateway-loadgen\r\n\r\n")
	return []byte(b.String())
}

// channelOf returns the channel index of global connection i with k channels.
func channelOf(i, k int) int { return i % k }

// isSlow reports whether global connection i is a slow consumer. Connections
// are dealt round-robin to channels, and within each channel every
// 1/fraction-th one is slow, so each channel gets its exact share.
func isSlow(i, k int, perMille int) bool {
	if perMille <= 0 {
		return false
	}
	j := i / k // index of the connection within its channel
	return (j+1)*perMille/1000 > j*perMille/1000
}
