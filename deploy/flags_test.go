package deploy

import (
	"testing"
)

// contractFlags are the serve flags of CONTRACT.md with their defaults, used while the
// gateway's main package does not exist (the stand-in has no flag table).
var contractFlags = map[string]string{
	"addr": ":8080", "metrics-addr": "", "redis-url": "", "redis-channel-prefix": "sse:",
	"redis-key-prefix": "sse-gateway:", "latest-ttl": "168h", "keys-file": "", "admin-token": "",
	"heartbeat": "15s", "write-timeout": "10s", "drain": "10s", "allowed-origins": "*",
	"max-channels": "10", "max-payload": "65536", "max-streams": "0", "max-streams-per-key": "0",
	"max-streams-per-ip": "0", "accept-rate": "0", "max-lifetime": "0s", "probe-interval": "2s",
	"log-format": "json", "log-level": "info", "tls-cert": "", "tls-key": "", "trusted-proxies": "",
	"pprof": "false",
}

// gatewayFlags returns the gateway's serve flags and their defaults.
func gatewayFlags(t *testing.T) map[string]string {
	t.Helper()
	return contractFlags
}
