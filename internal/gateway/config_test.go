package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// valid is a configuration Validate accepts: the command's flag defaults.
func valid() Config {
	return Config{
		Addr: ":8080", Heartbeat: 15 * time.Second, WriteTimeout: 10 * time.Second, Drain: 10 * time.Second,
		MaxChannels: 10, MaxPayload: 64 << 10, ProbeInterval: 2 * time.Second, LogFormat: "json",
		ReadHeaderTimeout: 5 * time.Second, LatestTTL: 168 * time.Hour, ChannelPrefix: "sse:", KeyPrefix: "sse-gateway:",
		MetricsChannelsMax: 1000, ReplayOnConnect: true,
	}
}

// Validate is the one check of the configuration: each wrong value is reported by its flag.
func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		flag string // "" = valid
		edit func(*Config)
	}{
		{"", func(*Config) {}},
		{"", func(c *Config) { c.LatestTTL = 0 }}, // zero means the default
		{"--heartbeat", func(c *Config) { c.Heartbeat = 99 * time.Millisecond }},
		{"--write-timeout", func(c *Config) { c.WriteTimeout = 0 }},
		{"--drain", func(c *Config) { c.Drain = -1 }},
		{"--max-channels", func(c *Config) { c.MaxChannels = 257 }},
		{"--max-payload", func(c *Config) { c.MaxPayload = 255 }},
		{"--tls-cert", func(c *Config) { c.TLSCert = "c.pem" }},
		{"--keys-redis", func(c *Config) { c.KeysRedis = true }},
		{"--max-streams-per-key", func(c *Config) { c.MaxStreamsPerKey = 1 }},
		{"--log-format", func(c *Config) { c.LogFormat = "xml" }},
		{"--probe-interval", func(c *Config) { c.ProbeInterval = 49 * time.Millisecond }},
		{"--read-header-timeout", func(c *Config) { c.ReadHeaderTimeout = time.Millisecond }},
		{"--latest-ttl", func(c *Config) { c.LatestTTL = -1 }},
		{"--latest-ttl", func(c *Config) { c.LatestTTL = time.Microsecond }},
		{"--redis-channel-prefix", func(c *Config) { c.ChannelPrefix = "a b" }},
		{"--redis-key-prefix", func(c *Config) { c.KeyPrefix = "a\n" }},
		{"--trusted-proxies", func(c *Config) { c.TrustedProxies = "10.0.0.0/8, nonsense" }},
		{"--redis-url", func(c *Config) { c.RedisURL = "http://x" }},
		{"--redis-url", func(c *Config) { c.RedisURL = "redis+sentinel://s1:26379/" }},
		{"--max-clock-skew", func(c *Config) { c.MaxClockSkew = -time.Second }},
		{"", func(c *Config) { c.RedisURL = "redis+sentinel://s1:26379,s2:26379/m" }},
		{"", func(c *Config) { c.RedisURL = "redis://h1:1?addr=h2:2"; c.RedisPubSub = "sharded" }},
		{"--redis-pubsub", func(c *Config) { c.RedisPubSub = "fanout" }},
		{"--redis-pubsub", func(c *Config) { c.RedisPubSub = "sharded" }}, // embedded broker
		{"--redis-pubsub", func(c *Config) { c.RedisURL = "redis://h:1"; c.RedisPubSub = "sharded" }},
		{"--redis-pubsub", func(c *Config) { c.RedisURL = "redis+sentinel://s:1/m"; c.RedisPubSub = "sharded" }},
		{"--admin-token-file", func(c *Config) { c.AdminToken, c.AdminTokenFile = "t", "f" }},
		{"--redis-password-file", func(c *Config) { c.RedisPasswordFile = "f" }},
		{"--metrics-channels-max", func(c *Config) { c.MetricsChannelsMax = 0 }},
	} {
		c := valid()
		tc.edit(&c)
		err := c.Validate()
		if (err == nil) != (tc.flag == "") || (err != nil && !strings.Contains(err.Error(), tc.flag)) {
			t.Errorf("Validate = %v, want an error naming %q", err, tc.flag)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	c := Config{TrustedProxies: "127.0.0.1, 10.1.2.3/8,,::1"}
	ps, err := c.trustedProxies()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	if want := "127.0.0.1/32 10.0.0.0/8 ::1/128"; strings.Join(got, " ") != want {
		t.Fatalf("trusted proxies %v, want %s", got, want)
	}
}

func TestLabelChannels(t *testing.T) {
	t.Parallel()
	if labelChannels(" , ") != nil {
		t.Fatal("no patterns must label no channel (nil)")
	}
	f := labelChannels("vip_*, exact")
	for ch, want := range map[string]bool{"vip_1": true, "exact": true, "exactly": false, "other": false} {
		if f(ch) != want {
			t.Errorf("label %q = %v, want %v", ch, !want, want)
		}
	}
}

// Secrets come from files without the trailing newline a mounted secret has, and the Redis
// password file overrides the URL's password in every --redis-url form.
func TestSecretFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-file\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadSecret("--x", pw); err != nil || s != "from-file" {
		t.Fatalf("ReadSecret = %q, %v", s, err)
	}
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	for _, f := range []string{empty, filepath.Join(dir, "missing")} {
		if _, err := ReadSecret("--x", f); err == nil || !strings.Contains(err.Error(), "--x") {
			t.Errorf("ReadSecret(%s) = %v, want an error naming the flag", f, err)
		}
	}
	for _, u := range []string{"redis://:url-pw@h:1/0", "redis://:url-pw@h:1?addr=h:2", "redis+sentinel://:url-pw@s:1/m?sentinel_password=sp"} {
		o, err := RedisOptions(u, pw)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		switch {
		case o.Standalone != nil:
			got = o.Standalone.Password
		case o.Cluster != nil:
			got = o.Cluster.Password
		default:
			got = o.Failover.Password
			if o.Failover.SentinelPassword != "sp" {
				t.Errorf("%s: the sentinel password changed to %q", u, o.Failover.SentinelPassword)
			}
		}
		if got != "from-file" {
			t.Errorf("%s with --redis-password-file: password %q", u, got)
		}
	}
}
