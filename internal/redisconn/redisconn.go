// Package redisconn opens the gateway's Redis from one --redis-url: a standalone server, a
// Redis Cluster, or a primary guarded by Sentinel. It owns the URL forms and the client
// settings that make a failover short: dials that fail at once instead of retrying a dead
// node, and (on a cluster) a slot map reloaded the moment a node fails rather than on a timer.
//
// The three forms:
//
//	redis://[user:pass@]host:port[/db]                  standalone (rediss:// for TLS)
//	redis://[user:pass@]host:port?addr=host:port&addr=… Redis Cluster: seed nodes
//	redis+sentinel://[user:pass@]h1:p1,h2:p2,…/master[?db=N&sentinel_password=…]
//
// In the Sentinel form, user:pass authenticate to the data nodes; sentinel_username and
// sentinel_password to the sentinels, when they have their own ACL.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Mode is the kind of Redis deployment a URL names.
type Mode int

// The deployments the gateway supports.
const (
	Standalone Mode = iota
	Cluster
	Sentinel
)

func (m Mode) String() string {
	switch m {
	case Cluster:
		return "cluster"
	case Sentinel:
		return "sentinel"
	}
	return "standalone"
}

// Failover-friendly client settings, used unless the URL sets them.
const (
	// dialTimeout bounds one connection attempt: a dead host on a real network would
	// otherwise hold every command for go-redis' 5 s.
	dialTimeout = 2 * time.Second
	// dialerRetries is one attempt per dial: go-redis' default of five attempts against a
	// node that was just killed only delays the reload that finds its replacement.
	dialerRetries = 1
	// ioTimeout bounds one command's read and write.
	ioTimeout = 3 * time.Second
)

// Every client also honours its context's deadline on the socket (go-redis'
// ContextTimeoutEnabled): a caller's timeout then bounds a command against a frozen node,
// where otherwise each of go-redis' retries waits out the read timeout.

// Options is a parsed --redis-url.
type Options struct {
	// Mode is the deployment the URL names.
	Mode Mode
	// Standalone, Cluster and Failover are go-redis' options for the mode (the other two
	// are nil).
	Standalone *redis.Options
	Cluster    *redis.ClusterOptions
	Failover   *redis.FailoverOptions
	// Redacted is the URL without passwords, for logs.
	Redacted string
}

// Parse reads a --redis-url in one of the package's three forms.
func Parse(raw string) (*Options, error) {
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return nil, fmt.Errorf("%q is not a redis://, rediss:// or redis+sentinel:// URL", redact(raw))
	}
	switch scheme {
	case "redis+sentinel":
		return parseSentinel(raw)
	case "redis", "rediss":
	default:
		return nil, fmt.Errorf("unknown scheme %q: use redis://, rediss:// or redis+sentinel://", scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact(raw), errors.Unwrap(err))
	}
	q := u.Query()
	if q.Has("addr") {
		co, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, fmt.Errorf("cluster URL %s: %w", redact(raw), err)
		}
		if !q.Has("dial_timeout") {
			co.DialTimeout = dialTimeout
		}
		if !q.Has("dialer_retries") {
			co.DialerRetries = dialerRetries
		}
		if !q.Has("read_timeout") {
			co.ReadTimeout = ioTimeout
		}
		if !q.Has("write_timeout") {
			co.WriteTimeout = ioTimeout
		}
		co.ContextTimeoutEnabled = true
		return &Options{Mode: Cluster, Cluster: co, Redacted: redact(raw)}, nil
	}
	o, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redact(raw), err)
	}
	if !q.Has("dial_timeout") {
		o.DialTimeout = dialTimeout
	}
	if !q.Has("dialer_retries") {
		o.DialerRetries = dialerRetries
	}
	o.ContextTimeoutEnabled = true
	return &Options{Mode: Standalone, Standalone: o, Redacted: redact(raw)}, nil
}

// sentinelParams are the query parameters the Sentinel form takes.
var sentinelParams = map[string]bool{"db": true, "sentinel_username": true, "sentinel_password": true,
	"client_name": true, "dial_timeout": true, "read_timeout": true, "write_timeout": true}

// parseSentinel reads redis+sentinel://[user:pass@]h1:p1,h2:p2/master[?query]. It is not
// parsed with net/url, which takes a comma-separated host list for one malformed host.
func parseSentinel(raw string) (*Options, error) {
	rest := strings.TrimPrefix(raw, "redis+sentinel://")
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	hosts, master, _ := strings.Cut(rest, "/")
	fo := &redis.FailoverOptions{DialTimeout: dialTimeout, DialerRetries: dialerRetries,
		ReadTimeout: ioTimeout, WriteTimeout: ioTimeout, ContextTimeoutEnabled: true}
	if at := strings.LastIndexByte(hosts, '@'); at >= 0 {
		user, pass, hasPass := strings.Cut(hosts[:at], ":")
		var err error
		if fo.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("sentinel URL: user: %w", err)
		}
		if hasPass {
			if fo.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("sentinel URL: password: %w", err)
			}
		}
		hosts = hosts[at+1:]
	}
	red := redact(raw)
	for _, h := range strings.Split(hosts, ",") {
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "26379")
		}
		if _, p, _ := net.SplitHostPort(h); p == "" {
			return nil, fmt.Errorf("sentinel URL %s: bad address %q", red, h)
		}
		fo.SentinelAddrs = append(fo.SentinelAddrs, h)
	}
	if len(fo.SentinelAddrs) == 0 {
		return nil, fmt.Errorf("sentinel URL %s: no sentinel address (redis+sentinel://h1:p1,h2:p2/<master-name>)", red)
	}
	master, err := url.PathUnescape(strings.Trim(master, "/"))
	if err != nil || master == "" || strings.Contains(master, "/") {
		return nil, fmt.Errorf("sentinel URL %s: the path must be the master name (redis+sentinel://h1:p1,h2:p2/<master-name>)", red)
	}
	fo.MasterName = master
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("sentinel URL %s: %w", red, err)
	}
	for k := range q {
		if !sentinelParams[k] {
			return nil, fmt.Errorf("sentinel URL %s: unknown parameter %q", red, k)
		}
	}
	if v := q.Get("db"); v != "" {
		if fo.DB, err = strconv.Atoi(v); err != nil || fo.DB < 0 {
			return nil, fmt.Errorf("sentinel URL %s: db=%q is not a database number", red, v)
		}
	}
	for name, d := range map[string]*time.Duration{"dial_timeout": &fo.DialTimeout, "read_timeout": &fo.ReadTimeout, "write_timeout": &fo.WriteTimeout} {
		if v := q.Get(name); v != "" {
			if *d, err = time.ParseDuration(v); err != nil {
				return nil, fmt.Errorf("sentinel URL %s: %s=%q: %w", red, name, v, err)
			}
		}
	}
	fo.SentinelUsername = q.Get("sentinel_username")
	fo.SentinelPassword = q.Get("sentinel_password")
	fo.ClientName = q.Get("client_name")
	return &Options{Mode: Sentinel, Failover: fo, Redacted: red}, nil
}

// redact replaces the password in a URL (and a sentinel_password parameter) with "xxx".
func redact(raw string) string {
	out := raw
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		end := strings.IndexAny(rest, "/?")
		if end < 0 {
			end = len(rest)
		}
		if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
			user, _, hasPass := strings.Cut(rest[:at], ":")
			if hasPass {
				user += ":xxx"
			}
			out = scheme + "://" + user + "@" + rest[at+1:]
		}
	}
	if i := strings.Index(out, "sentinel_password="); i >= 0 {
		j := strings.IndexByte(out[i:], '&')
		if j < 0 {
			j = len(out) - i
		}
		out = out[:i] + "sentinel_password=xxx" + out[i+j:]
	}
	return out
}

// Open returns a client for the parsed URL, named name on the server (CLIENT LIST) unless
// the URL names it. On a cluster, the slot map is reloaded whenever a command or a dial to a
// node fails, so that a promoted replica is found as soon as the cluster knows of it.
func Open(o *Options, name string) redis.UniversalClient {
	switch o.Mode {
	case Cluster:
		co := *o.Cluster
		if co.ClientName == "" {
			co.ClientName = name
		}
		cc := redis.NewClusterClient(&co)
		h := reloadHook{cc: cc}
		// On every node client, so that the first failed attempt triggers the reload, not
		// the last of go-redis' retries.
		cc.OnNewNode(func(node *redis.Client) { node.AddHook(h) })
		return cc
	case Sentinel:
		fo := *o.Failover
		if fo.ClientName == "" {
			fo.ClientName = name
		}
		return redis.NewFailoverClient(&fo)
	}
	so := *o.Standalone
	if so.ClientName == "" {
		so.ClientName = name
	}
	return redis.NewClient(&so)
}

// NodeOptions are the options of a client for one cluster node at addr, with the cluster
// client's credentials, TLS and timeouts.
func NodeOptions(cc *redis.ClusterClient, addr string) *redis.Options {
	co := cc.Options()
	return &redis.Options{
		Addr:                  addr,
		ClientName:            co.ClientName,
		Dialer:                co.Dialer,
		Protocol:              co.Protocol,
		Username:              co.Username,
		Password:              co.Password,
		TLSConfig:             co.TLSConfig,
		DialTimeout:           co.DialTimeout,
		DialerRetries:         co.DialerRetries,
		DialerRetryTimeout:    co.DialerRetryTimeout,
		ReadTimeout:           co.ReadTimeout,
		WriteTimeout:          co.WriteTimeout,
		MaxRetries:            -1, // the caller decides: a node that fails is a topology change
		ContextTimeoutEnabled: true,
		PoolSize:              4,
	}
}

// reloadHook reloads a cluster's slot map when a node fails.
type reloadHook struct{ cc *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.cc.ReloadState(ctx)
		}
		return c, err
	}
}

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if TopologyChanged(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if TopologyChanged(c.Err()) {
				h.cc.ReloadState(ctx)
				break
			}
		}
		return err
	}
}

// TopologyChanged reports whether err says the node that answered (or did not) may no longer
// serve what was asked of it: it is unreachable, down, loading, read-only (demoted), or the
// cluster is reconfiguring.
func TopologyChanged(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, net.ErrClosed) {
		return true
	}
	for _, p := range []string{"CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "LOADING", "READONLY", "MOVED", "ASK"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	s := err.Error()
	return strings.Contains(s, "connection refused") || strings.Contains(s, "EOF") ||
		strings.Contains(s, "connection reset")
}

// RouteLibraryLogs sends go-redis' own log lines (a dial that failed, a pool event) to log at
// debug level instead of standard error: the gateway reports Redis trouble itself, once and
// with context, and a failover would otherwise print a line per failed dial. go-redis keeps
// its logger process-wide, so only main calls this, once.
func RouteLibraryLogs(log *slog.Logger) {
	redis.SetLogger(libraryLogger{log.With("component", "go-redis")})
}

type libraryLogger struct{ log *slog.Logger }

func (l libraryLogger) Printf(ctx context.Context, format string, v ...any) {
	if l.log.Enabled(ctx, slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, v...))
	}
}

// Slot is the Redis Cluster hash slot of key: CRC-16/XMODEM of its {hash tag} if it has a
// non-empty one, else of the whole key, modulo 16384 (as CLUSTER KEYSLOT answers).
func Slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}
