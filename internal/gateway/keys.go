package gateway

import (
	"fmt"
	"net"

	"github.com/sse-gateway/sse-gateway/internal/auth"
)

// setUpKeys returns the admin token (generated when not configured) and, for a first run
// with neither a keys file nor keys in Redis, sets a generated key for any channel. Both
// generated secrets are logged once, with commands to try them: a first run with no
// configuration needs them to be usable at all.
func (g *Gateway) setUpKeys() (string, error) {
	cfg, log := &g.cfg, g.log
	token := cfg.AdminToken
	if token == "" {
		t, err := auth.Generate()
		if err != nil {
			return "", err
		}
		token = t
	}
	port := "8080"
	if _, p, err := net.SplitHostPort(cfg.Addr); err == nil && p != "0" {
		port = p
	}
	if cfg.KeysFile == "" && !cfg.KeysRedis {
		secret, err := auth.Generate()
		if err != nil {
			return "", err
		}
		g.keys.SetSource("generated", []auth.Key{{Name: "default", Hash: auth.HashKey(secret), Channels: []string{"*"}}})
		// The one place a key is logged. Configure --keys-file for anything real.
		log.Warn("no --keys-file: generated a key for this run (any channel)",
			"key", secret,
			"try", fmt.Sprintf("curl -N 'http://127.0.0.1:%s/event-stream?v=1.2&channels=demo&key=%s'", port, secret))
	}
	if cfg.AdminToken == "" { // neither --admin-token nor --admin-token-file
		log.Warn("no --admin-token: generated one for this run",
			"admin_token", token,
			"publish", fmt.Sprintf("sse-gateway publish --gateway http://127.0.0.1:%s --admin-token %s --channel demo --etag '\"v1\"'", port, token))
	}
	return token, nil
}
