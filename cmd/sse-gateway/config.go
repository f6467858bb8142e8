package main

import (
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// envPrefix: every flag --some-name can also be set as SSE_GATEWAY_SOME_NAME; a flag given
// on the command line wins.
const envPrefix = "SSE_GATEWAY_"

// serveConfig is everything `sse-gateway serve` is configured with.
type serveConfig struct {
	Addr             string
	MetricsAddr      string
	RedisURL         string
	ChannelPrefix    string
	KeyPrefix        string
	LatestTTL        time.Duration
	KeysFile         string
	KeysRedis        bool
	AdminToken       string
	Heartbeat        time.Duration
	WriteTimeout     time.Duration
	Drain            time.Duration
	AllowedOrigins   string
	MaxChannels      int
	MaxPayload       int
	MaxStreams       int
	MaxStreamsPerKey int
	MaxStreamsPerIP  int
	AcceptRate       float64
	MaxLifetime      time.Duration
	ProbeInterval    time.Duration
	LogFormat        string
	LogLevel         string
	TLSCert          string
	TLSKey           string
	TrustedProxies   string
	Pprof            bool
	InstanceID       string
	ReadHeaderTime   time.Duration
	MetricsChannels  string
	SendBuffer       int
}

// serveFlags defines the serve flags on fs, bound to cfg. It is the single source of the
// flag reference (--help, `sse-gateway flags --markdown`, docs/OPERATIONS.md).
func serveFlags(fs *flag.FlagSet, cfg *serveConfig) {
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address for streams, the publish API, health and (without --metrics-addr) metrics")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "separate listen address for /metrics (and /debug/pprof with --pprof); empty serves /metrics on --addr")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "Redis URL (redis://[user:pass@]host:port[/db], rediss:// for TLS); empty runs the embedded in-process broker (one instance)")
	fs.StringVar(&cfg.ChannelPrefix, "redis-channel-prefix", "sse:", "pub/sub prefix: the config service runs PUBLISH <prefix><channel> <json>")
	fs.StringVar(&cfg.KeyPrefix, "redis-key-prefix", "sse-gateway:", "prefix of the Redis keys the gateway stores (latest event per channel, keys, quotas)")
	fs.DurationVar(&cfg.LatestTTL, "latest-ttl", 168*time.Hour, "how long the newest event of a channel is kept in Redis for resuming streams")
	fs.StringVar(&cfg.KeysFile, "keys-file", "", `JSON keys file {"keys":[{"name":"prod","key":"<secret>","channels":["dvc_server_*"]}]}, reloaded on SIGHUP; empty (and no --keys-redis) generates one key at start`)
	fs.BoolVar(&cfg.KeysRedis, "keys-redis", false, "also accept keys managed in Redis with `sse-gateway keys` (needs --redis-url)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token for POST /v1/publish; empty generates one at start and logs it")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 15*time.Second, "interval of heartbeat comment lines on a quiet stream")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 10*time.Second, "a stream whose write cannot complete in this time is closed as slow")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "on SIGTERM/SIGINT, open streams are closed spread over this window")
	fs.StringVar(&cfg.AllowedOrigins, "allowed-origins", "*", "comma-separated CORS origins allowed to open streams with credentials; * allows any (the origin is echoed)")
	fs.IntVar(&cfg.MaxChannels, "max-channels", 10, "most channels one stream may subscribe to (at most 256)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", 64<<10, "largest accepted publish payload in bytes")
	fs.IntVar(&cfg.MaxStreams, "max-streams", 0, "most open streams on this instance, 503 above it; 0 derives it from the open-files limit")
	fs.IntVar(&cfg.MaxStreamsPerKey, "max-streams-per-key", 0, "most open streams per key across all instances (needs --redis-url), 429 above it; 0 is unlimited")
	fs.IntVar(&cfg.MaxStreamsPerIP, "max-streams-per-ip", 0, "most open streams per client address on this instance, 429 above it; 0 is unlimited")
	fs.Float64Var(&cfg.AcceptRate, "accept-rate", 0, "most new streams per second on this instance, 429 above it; 0 is unlimited")
	fs.DurationVar(&cfg.MaxLifetime, "max-lifetime", 0, "close streams after 80-100% of this (jittered) so connections rebalance; 0 is unlimited")
	fs.DurationVar(&cfg.ProbeInterval, "probe-interval", 2*time.Second, "interval of the Redis pub/sub liveness probe; not ready after 3 missed probes")
	fs.StringVar(&cfg.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM); with --tls-key serves HTTPS and HTTP/2")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&cfg.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For gives the client address")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof on --metrics-addr (never on --addr)")
	fs.IntVar(&cfg.SendBuffer, "send-buffer", 64<<10, "kernel send buffer per stream socket in bytes (SO_SNDBUF): bounds what a client that stops reading pins; -1 leaves it to the kernel")
	fs.StringVar(&cfg.MetricsChannels, "metrics-channels", "", "comma-separated channel patterns ('*' wildcard) whose names may appear as metric labels (sse_gateway_channel_*); empty: none")
	fs.StringVar(&cfg.InstanceID, "instance-id", "", "name of this instance in logs and probes; empty uses hostname and pid")
	fs.DurationVar(&cfg.ReadHeaderTime, "read-header-timeout", 5*time.Second, "a connection that has not sent complete request headers in this time is closed (slowloris)")
}

// envName is the environment variable that backs a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseFlags parses args, then fills every flag not given on the command line from its
// environment variable, so errors name the flag or the variable that is wrong.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// validate checks the values that flag parsing cannot.
func (c *serveConfig) validate() error {
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
		return fmt.Errorf("--tls-cert and --tls-key go together")
	case c.KeysRedis && c.RedisURL == "":
		return fmt.Errorf("--keys-redis needs --redis-url")
	case c.MaxStreamsPerKey > 0 && c.RedisURL == "":
		return fmt.Errorf("--max-streams-per-key needs --redis-url (it is counted across instances)")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return fmt.Errorf("--log-format %q: use json or text", c.LogFormat)
	case c.ProbeInterval < 50*time.Millisecond:
		return fmt.Errorf("--probe-interval %s: must be at least 50ms", c.ProbeInterval)
	case c.ReadHeaderTime < 10*time.Millisecond:
		return fmt.Errorf("--read-header-timeout %s: must be at least 10ms", c.ReadHeaderTime)
	}
	if _, err := c.trustedProxies(); err != nil {
		return err
	}
	return nil
}

func (c *serveConfig) trustedProxies() ([]netip.Prefix, error) {
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

// defaultMaxStreams leaves room under the open-files limit for listeners, Redis connections
// and requests being refused, so the instance answers 503 instead of failing accept().
func defaultMaxStreams() int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	n := int(lim.Cur) - 256
	n -= n / 20
	return max(n, 64)
}

// writeFlagTable prints the serve flags as a Markdown table (docs/OPERATIONS.md embeds it).
func writeFlagTable(w io.Writer) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	serveFlags(fs, &serveConfig{})
	fmt.Fprintln(w, "| flag | environment | default | meaning |")
	fmt.Fprintln(w, "|---|---|---|---|")
	fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "| `--%s` | `%s` | `%s` | %s |\n", f.Name, envName(f.Name), def, strings.ReplaceAll(f.Usage, "|", `\|`))
	})
}
