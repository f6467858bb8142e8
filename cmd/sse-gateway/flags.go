package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
	"github.com/sse-gateway/sse-gateway/internal/store"
)

// envPrefix: every flag --some-name can also be set as SSE_GATEWAY_SOME_NAME; a flag given
// on the command line wins.
const envPrefix = "SSE_GATEWAY_"

// serveFlags defines the serve flags on fs, bound to cfg. It is the single source of the
// flag reference (--help, `sse-gateway flags --markdown`, docs/OPERATIONS.md); the
// gateway.Config field comments name the flag of each field.
func serveFlags(fs *flag.FlagSet, cfg *gateway.Config) {
	fs.StringVar(&cfg.Addr, "addr", ":8080", "listen address for streams, the publish API, health and (without --metrics-addr) metrics")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "separate listen address for /metrics (and /debug/pprof with --pprof); empty serves /metrics on --addr")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "Redis URL: redis://[user:pass@]host:port[/db] (rediss:// for TLS); a Redis Cluster as redis://host:port?addr=host2:port2&addr=...; Sentinel as redis+sentinel://[user:pass@]s1:port,s2:port,.../<master-name>[?db=N&sentinel_password=...]; empty runs the embedded in-process broker (one instance)")
	fs.StringVar(&cfg.RedisPubSub, "redis-pubsub", "classic", "Redis pub/sub mode: classic (one pattern subscription per instance; any Redis) or sharded (Redis 7 sharded pub/sub on a cluster: each channel's events go only to its shard and to the instances that stream it; publish with SPUBLISH)")
	fs.StringVar(&cfg.ChannelPrefix, "redis-channel-prefix", store.DefaultChannelPrefix, "pub/sub prefix: the config service runs PUBLISH <prefix><channel> <json>")
	fs.StringVar(&cfg.KeyPrefix, "redis-key-prefix", store.DefaultKeyPrefix, "prefix of the Redis keys the gateway stores (latest event per channel, keys, quotas)")
	fs.DurationVar(&cfg.LatestTTL, "latest-ttl", store.DefaultLatestTTL, "how long the newest event of a channel is kept in Redis for resuming streams")
	fs.StringVar(&cfg.KeysFile, "keys-file", "", `JSON keys file {"keys":[{"name":"prod","key":"<secret>","channels":["dvc_server_*"]}]}, reloaded on SIGHUP; empty (and no --keys-redis) generates one key at start`)
	fs.BoolVar(&cfg.KeysRedis, "keys-redis", false, "also accept keys managed in Redis with 'sse-gateway keys' (needs --redis-url)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token for POST /v1/publish; empty (and no --admin-token-file) generates one at start and logs it")
	fs.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the admin token (a mounted secret, kept off the command line); a trailing newline is ignored")
	fs.StringVar(&cfg.RedisPasswordFile, "redis-password-file", "", "file holding the Redis password (a mounted secret), overriding the one in --redis-url; a trailing newline is ignored")
	fs.DurationVar(&cfg.Heartbeat, "heartbeat", 15*time.Second, "interval of heartbeat comment lines on a quiet stream")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", 10*time.Second, "a stream whose write cannot complete in this time is closed as slow")
	fs.BoolVar(&cfg.ReplayOnConnect, "replay-on-connect", true, "send a stream that opens without Last-Event-ID each channel's newest event: closes the race between an SDK's config fetch and its stream, at one conditional CDN request (a 304) per connect of an SDK that refetches on every event (the Python server SDK); false sends only what is published after it opened")
	fs.DurationVar(&cfg.Drain, "drain", 10*time.Second, "on SIGTERM/SIGINT, open streams are closed spread over this window")
	fs.StringVar(&cfg.AllowedOrigins, "allowed-origins", "*", "comma-separated CORS origins allowed to open streams with credentials; * allows any (the origin is echoed, never 'null'); empty allows none")
	fs.IntVar(&cfg.MaxChannels, "max-channels", 10, "most channels one stream may subscribe to (at most 256)")
	fs.IntVar(&cfg.MaxPayload, "max-payload", 64<<10, "largest accepted publish payload in bytes")
	fs.IntVar(&cfg.MaxStreams, "max-streams", 0, "most open streams on this instance, 503 above it; 0 derives it from the open-files limit")
	fs.IntVar(&cfg.MaxStreamsPerKey, "max-streams-per-key", 0, "most open streams per key across all instances (needs --redis-url), 429 above it; 0 is unlimited")
	fs.IntVar(&cfg.MaxStreamsPerIP, "max-streams-per-ip", 0, "most open streams per client address (an IPv6 /64 counts as one) on this instance, 429 above it; 0 is unlimited")
	fs.Float64Var(&cfg.AcceptRate, "accept-rate", 0, "most new streams per second on this instance, 429 above it; 0 is unlimited")
	fs.DurationVar(&cfg.MaxLifetime, "max-lifetime", 0, "close streams after 80-100% of this (jittered) so connections rebalance; 0 is unlimited")
	fs.DurationVar(&cfg.ProbeInterval, "probe-interval", 2*time.Second, "interval of the Redis pub/sub liveness probe; not ready after 3 missed probes")
	fs.DurationVar(&cfg.MaxClockSkew, "max-clock-skew", 5*time.Minute, "refuse a published lastModified more than this ahead of the gateway's clock (likely not epoch ms); 0 accepts any")
	fs.StringVar(&cfg.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM); with --tls-key serves HTTPS and HTTP/2")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&cfg.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For gives the client address")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve /debug/pprof on --metrics-addr (never on --addr)")
	fs.IntVar(&cfg.SendBuffer, "send-buffer", 64<<10, "kernel send buffer per stream socket in bytes (SO_SNDBUF): bounds what a client that stops reading pins; -1 leaves it to the kernel")
	fs.StringVar(&cfg.MetricsChannels, "metrics-channels", "", "comma-separated channel patterns ('*' wildcard) whose names may appear as metric labels (sse_gateway_channel_*); empty: none")
	fs.IntVar(&cfg.MetricsChannelsMax, "metrics-channels-max", 1000, "most channels with per-channel series at a time (a channel's series go with its last stream)")
	fs.StringVar(&cfg.InstanceID, "instance-id", "", "name of this instance in logs and probes; empty uses hostname and pid")
	fs.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", 5*time.Second, "a connection that has not sent complete request headers in this time is closed (slowloris)")
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

// writeFlagTable prints the serve flags as a Markdown table (docs/OPERATIONS.md embeds it).
func writeFlagTable(w io.Writer) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	serveFlags(fs, &gateway.Config{})
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
