package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

// Config is everything a gateway runs with. cmd/sse-gateway binds one flag to each field
// (named in its comment) and its flag defaults are the documented ones; Validate reports
// the first wrong value by its flag.
type Config struct {
	// Addr is the listen address for streams, the publish API, health and (without
	// MetricsAddr) metrics (--addr).
	Addr string
	// MetricsAddr is a separate listen address for /metrics and, with Pprof, /debug/pprof;
	// empty serves /metrics on Addr (--metrics-addr).
	MetricsAddr string
	// RedisURL is the Redis of a cluster of gateways; empty runs the embedded broker of a
	// single instance (--redis-url).
	RedisURL string
	// ChannelPrefix, KeyPrefix and LatestTTL are the store's (--redis-channel-prefix,
	// --redis-key-prefix, --latest-ttl; see store.Config).
	ChannelPrefix string
	KeyPrefix     string
	LatestTTL     time.Duration
	// KeysFile is the JSON keys file, reloaded by Reload (--keys-file).
	KeysFile string
	// KeysRedis also accepts keys managed in Redis (--keys-redis; needs RedisURL).
	KeysRedis bool
	// AdminToken is the bearer token of POST /v1/publish; empty (and no AdminTokenFile)
	// generates one, logged once (--admin-token).
	AdminToken string
	// AdminTokenFile is a file holding the admin token (a mounted secret), so that it is on
	// no command line; one trailing newline is ignored (--admin-token-file).
	AdminTokenFile string
	// RedisPasswordFile is a file holding the Redis password, which overrides the one in
	// RedisURL; one trailing newline is ignored (--redis-password-file).
	RedisPasswordFile string
	// Heartbeat, WriteTimeout, MaxChannels, MaxStreamsPerIP, AcceptRate, MaxLifetime and
	// SendBuffer are the stream server's (--heartbeat, --write-timeout, --max-channels,
	// --max-streams-per-ip, --accept-rate, --max-lifetime, --send-buffer; see stream.Config).
	Heartbeat       time.Duration
	WriteTimeout    time.Duration
	MaxChannels     int
	MaxStreamsPerIP int
	AcceptRate      float64
	MaxLifetime     time.Duration
	SendBuffer      int
	// ReplayOnConnect sends a stream that opens without a Last-Event-ID each channel's
	// newest event (--replay-on-connect; see stream.Config.NoReplay for the trade-off).
	ReplayOnConnect bool
	// Drain is the window over which open streams are closed at shutdown (--drain).
	Drain time.Duration
	// AllowedOrigins is the comma-separated CORS origins list; "*" allows any, empty none
	// (--allowed-origins).
	AllowedOrigins string
	// MaxPayload is the largest accepted publish payload in bytes (--max-payload).
	MaxPayload int
	// MaxStreams caps this instance's streams; 0 derives the cap from the open-files limit
	// (stream.DefaultMaxStreams) (--max-streams).
	MaxStreams int
	// MaxStreamsPerKey caps streams per key across instances; 0 is unlimited
	// (--max-streams-per-key; needs RedisURL).
	MaxStreamsPerKey int
	// ProbeInterval is the Redis pub/sub liveness probe's interval (--probe-interval).
	ProbeInterval time.Duration
	// RedisPubSub is "classic" (one pattern subscription per instance) or "sharded" (Redis 7
	// sharded pub/sub on a cluster: a shard subscription per channel with streams)
	// (--redis-pubsub; empty means classic).
	RedisPubSub string
	// MaxClockSkew is how far ahead of this instance's clock a published lastModified may
	// be; a later one is refused (--max-clock-skew; 0 checks nothing).
	MaxClockSkew time.Duration
	// LogFormat and LogLevel are checked here and applied by the command (--log-format,
	// --log-level).
	LogFormat string
	LogLevel  string
	// TLSCert and TLSKey, together, serve HTTPS and HTTP/2 on Addr (--tls-cert, --tls-key).
	TLSCert string
	TLSKey  string
	// TrustedProxies is the comma-separated CIDRs (or addresses) of proxies whose
	// X-Forwarded-For gives the client address (--trusted-proxies).
	TrustedProxies string
	// Pprof serves /debug/pprof on MetricsAddr, never on Addr (--pprof).
	Pprof bool
	// InstanceID names this instance in logs and probes; empty uses hostname and pid
	// (--instance-id).
	InstanceID string
	// ReadHeaderTimeout closes connections that have not sent complete request headers
	// in time (--read-header-timeout).
	ReadHeaderTimeout time.Duration
	// MetricsChannels is the comma-separated channel patterns whose names may be metric
	// labels (--metrics-channels).
	MetricsChannels string
	// MetricsChannelsMax bounds how many channels have per-channel series at a time
	// (--metrics-channels-max; see hub.Config.MaxLabeledChannels).
	MetricsChannelsMax int

	// Version is the build's version, exported as sse_gateway_build_info.
	Version string
	// Logger receives every log line (nil: discarded).
	Logger *slog.Logger
	// Registry is where the gateway's metrics are registered and what /metrics serves
	// (nil: a new registry with the Go and process collectors).
	Registry *prometheus.Registry
}

// Validate checks the values that flag parsing cannot, and names the flag of the first one
// that is wrong.
func (c *Config) Validate() error {
	switch {
	case c.Heartbeat < 100*time.Millisecond:
		return fmt.Errorf("--heartbeat %s: must be at least 100ms", c.Heartbeat)
	case c.WriteTimeout < 100*time.Millisecond:
		return fmt.Errorf("--write-timeout %s: must be at least 100ms", c.WriteTimeout)
	case c.Drain < 0:
		return fmt.Errorf("--drain %s: must not be negative", c.Drain)
	case c.MaxChannels < 1 || c.MaxChannels > 256:
		return fmt.Errorf("--max-channels %d: must be 1..256", c.MaxChannels)
	case c.MaxPayload < 256:
		return fmt.Errorf("--max-payload %d: must be at least 256", c.MaxPayload)
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("--tls-cert and --tls-key go together")
	case c.AdminToken != "" && c.AdminTokenFile != "":
		return errors.New("--admin-token and --admin-token-file: give one")
	case c.RedisPasswordFile != "" && c.RedisURL == "":
		return errors.New("--redis-password-file needs --redis-url")
	case c.KeysRedis && c.RedisURL == "":
		return errors.New("--keys-redis needs --redis-url")
	case c.MaxStreamsPerKey > 0 && c.RedisURL == "":
		return errors.New("--max-streams-per-key needs --redis-url (it is counted across instances)")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format %q: use json or text", c.LogFormat)
	case c.MaxClockSkew < 0:
		return fmt.Errorf("--max-clock-skew %s: must not be negative", c.MaxClockSkew)
	case c.ProbeInterval < 50*time.Millisecond:
		return fmt.Errorf("--probe-interval %s: must be at least 50ms", c.ProbeInterval)
	case c.ReadHeaderTimeout < 10*time.Millisecond:
		return fmt.Errorf("--read-header-timeout %s: must be at least 10ms", c.ReadHeaderTimeout)
	case c.MetricsChannelsMax < 1:
		return fmt.Errorf("--metrics-channels-max %d: must be at least 1 (an empty --metrics-channels labels none)", c.MetricsChannelsMax)
	case c.LatestTTL < 0:
		return fmt.Errorf("--latest-ttl must not be negative, got %v", c.LatestTTL)
	case c.LatestTTL > 0 && c.LatestTTL < time.Millisecond:
		return fmt.Errorf("--latest-ttl must be at least 1ms, got %v", c.LatestTTL)
	case strings.ContainsAny(c.ChannelPrefix, " \r\n"):
		return errors.New("--redis-channel-prefix must not contain spaces or line breaks")
	case strings.ContainsAny(c.KeyPrefix, " \r\n"):
		return errors.New("--redis-key-prefix must not contain spaces or line breaks")
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	switch c.RedisPubSub {
	case "", "classic", "sharded":
	default:
		return fmt.Errorf("--redis-pubsub %q: use classic or sharded", c.RedisPubSub)
	}
	if c.RedisURL != "" {
		o, err := redisconn.Parse(c.RedisURL)
		if err != nil {
			return fmt.Errorf("--redis-url: %w", err)
		}
		if c.RedisPubSub == "sharded" && o.Mode != redisconn.Cluster {
			return fmt.Errorf("--redis-pubsub sharded needs a Redis Cluster --redis-url (redis://host:port?addr=host2:port2...), got a %s one", o.Mode)
		}
	} else if c.RedisPubSub == "sharded" {
		return errors.New("--redis-pubsub sharded needs a Redis Cluster --redis-url")
	}
	return nil
}

// ReadSecret reads a secret from the file the flag flagName names; one trailing newline
// (which editors and `kubectl create secret --from-file` leave) is not part of it.
func ReadSecret(flagName, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flagName, err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("%s %s: the file is empty", flagName, path)
	}
	return s, nil
}

func (c *Config) trustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(c.TrustedProxies, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("--trusted-proxies %q: %w", s, err)
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("--trusted-proxies %q: %w", s, err)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
