// Package gateway wires one sse-gateway instance from its Config: the hub, the broker (the
// Redis store and subscriber, or the embedded one), the key sources, the per-key quota, the
// stream server, the publish API and the health, readiness and metrics endpoints, on one or
// two listeners. New builds it; Run serves until its context ends, then drains.
//
// Goroutines: Run owns every long-lived goroutine of the instance and waits for each before
// it returns: the broker's (subscription, dispatchers, probe), the stream server's poller,
// the quota's, the Redis key source's, and one per listener (net/http's own per-connection
// goroutines are the http.Server's, and end with its Shutdown).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"

	"github.com/sse-gateway/sse-gateway/internal/api"
	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/quota"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/stream"
	"github.com/sse-gateway/sse-gateway/internal/subscribe"
)

// broker is what the gateway runs its hub's feed with: the embedded store.Memory, or the
// Redis store and subscriber together.
type broker struct {
	publisher api.Publisher // POST /v1/publish
	seeder    stream.Seeder // a channel's newest event for a connecting stream
	run       func(ctx context.Context) error
	ready     func() bool
}

// Gateway is one running instance. Build it with New and call Run once.
type Gateway struct {
	cfg        Config
	log        *slog.Logger
	reg        *prometheus.Registry
	hub        *hub.Hub
	rdb        redis.UniversalClient // nil with the embedded broker
	broker     broker
	keys       *auth.Store
	fileKeys   *auth.FileSource  // nil without --keys-file
	redisKeys  *auth.RedisSource // nil without --keys-redis
	quota      *quota.Quota      // nil without --max-streams-per-key
	streams    *stream.Server
	adminToken string
	reload     chan struct{} // capacity 1: Reload asked for, done by Run
}

// New validates cfg and builds the instance; nothing listens, and nothing talks to Redis,
// before Run. Run must be called to release what New holds (the hub's workers, the stream
// server's poller, the Redis client).
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.InstanceID == "" {
		host, _ := os.Hostname()
		cfg.InstanceID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = stream.DefaultMaxStreams()
	}
	if cfg.AdminTokenFile != "" {
		t, err := ReadSecret("--admin-token-file", cfg.AdminTokenFile)
		if err != nil {
			return nil, err
		}
		cfg.AdminToken = t
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, reg: cfg.Registry, reload: make(chan struct{}, 1)}
	if g.reg == nil {
		g.reg = prometheus.NewRegistry()
		g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	g.reg.MustRegister(buildInfo(cfg.Version))
	g.hub = hub.New(hub.Config{LabelChannel: labelChannels(cfg.MetricsChannels), MaxLabeledChannels: cfg.MetricsChannelsMax}, g.reg)
	if err := g.build(); err != nil {
		g.close()
		return nil, err
	}
	g.registerGauges()
	return g, nil
}

// build makes everything after the hub; on error, close releases what it made.
func (g *Gateway) build() error {
	cfg, log := &g.cfg, g.log
	storeCfg := store.Config{ChannelPrefix: cfg.ChannelPrefix, KeyPrefix: cfg.KeyPrefix, LatestTTL: cfg.LatestTTL,
		Sharded: cfg.RedisPubSub == "sharded"}
	if cfg.RedisURL == "" {
		m := store.NewMemory(g.hub, storeCfg)
		m.Register(g.reg)
		g.broker = broker{publisher: m, seeder: m, run: m.Run, ready: m.Ready}
	} else {
		o, err := RedisOptions(cfg.RedisURL, cfg.RedisPasswordFile)
		if err != nil {
			return err
		}
		g.rdb = redisconn.Open(o, "sse-gateway-"+cfg.InstanceID)
		st := store.NewRedis(g.rdb, storeCfg)
		sub := subscribe.NewRedis(g.rdb, st, g.hub, subscribe.Config{
			MaxPayload:    cfg.MaxPayload,
			ProbeInterval: cfg.ProbeInterval,
			InstanceID:    cfg.InstanceID,
			MaxClockSkew:  cfg.MaxClockSkew,
		}, log, g.reg)
		g.broker = broker{publisher: st, seeder: sub, run: sub.Run, ready: sub.Ready}
	}

	g.keys = auth.NewStore()
	var err error
	if g.adminToken, err = g.setUpKeys(); err != nil {
		return err
	}

	var keyQuota stream.KeyQuota // nil: no per-key limit
	if cfg.MaxStreamsPerKey > 0 {
		g.quota, err = quota.New(g.rdb, quota.Config{Limit: cfg.MaxStreamsPerKey, KeyPrefix: cfg.KeyPrefix, Instance: cfg.InstanceID}, log)
		if err != nil {
			return err
		}
		keyQuota = g.quota
	}

	proxies, _ := cfg.trustedProxies() // checked by Validate
	g.streams, err = stream.New(stream.Config{
		Heartbeat:       cfg.Heartbeat,
		WriteTimeout:    cfg.WriteTimeout,
		MaxChannels:     cfg.MaxChannels,
		AllowedOrigins:  strings.Split(cfg.AllowedOrigins, ","),
		MaxStreams:      cfg.MaxStreams,
		MaxStreamsPerIP: cfg.MaxStreamsPerIP,
		AcceptRate:      cfg.AcceptRate,
		MaxLifetime:     cfg.MaxLifetime,
		TrustedProxies:  proxies,
		SendBuffer:      cfg.SendBuffer,
		NoReplay:        !cfg.ReplayOnConnect,
	}, g.hub, g.keys, g.broker.seeder, keyQuota, log, g.reg)
	if err != nil {
		return err
	}
	if cfg.KeysFile != "" {
		g.fileKeys = auth.NewFileSource(cfg.KeysFile, g.keys, g.streams.CloseKeys, log)
		if err := g.fileKeys.Load(); err != nil {
			return err
		}
	}
	if cfg.KeysRedis {
		g.redisKeys = auth.NewRedisSource(auth.NewRedisKeys(g.rdb, cfg.KeyPrefix), g.keys, g.streams.CloseKeys, auth.RedisSourceConfig{}, log)
	}
	return nil
}

// close releases what New made; Run calls it when it returns.
func (g *Gateway) close() {
	g.hub.Close()
	if g.rdb != nil {
		_ = g.rdb.Close()
	}
}

// Reload re-reads the keys file and the keys in Redis (what SIGHUP asks for); Run does it
// on its own goroutine. It never blocks.
func (g *Gateway) Reload() {
	select {
	case g.reload <- struct{}{}:
	default:
	}
}

// Run listens, serves and keeps the instance's background work going until ctx ends or
// any of it fails; then it drains: not ready at once, no new connections, open streams
// closed spread over the drain window with a jittered retry:. It returns the first failure
// (nil after a clean stop) once every goroutine it started has returned.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.close()
	cfg, log := &g.cfg, g.log
	servers, listeners, err := g.listen()
	if err != nil {
		return err
	}

	// The background work outlives ctx: it must keep running while streams drain.
	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	// failed is done as soon as one goroutine fails (or when Wait returns).
	group, failed := errgroup.WithContext(runCtx)
	goRun := func(name string, f func(context.Context) error) {
		group.Go(func() error {
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	goRun("broker", g.broker.run)
	goRun("streams", g.streams.Run)
	if g.quota != nil {
		goRun("quota", g.quota.Run)
	}
	if g.redisKeys != nil {
		goRun("redis keys", g.redisKeys.Run)
	}
	for i, s := range servers {
		l := listeners[i]
		group.Go(func() error {
			var err error
			if i == 0 && cfg.TLSCert != "" {
				err = s.ServeTLS(l, cfg.TLSCert, cfg.TLSKey)
			} else {
				err = s.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	log.Info("listening", "addr", listeners[0].Addr().String(), "scheme", scheme, "broker", brokerName(cfg.RedisURL),
		"instance", cfg.InstanceID, "max_streams", cfg.MaxStreams, "version", cfg.Version)

loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-failed.Done():
			break loop
		case <-g.reload:
			if g.fileKeys != nil {
				g.fileKeys.Reload()
			}
			if g.redisKeys != nil {
				g.redisKeys.Reload()
			}
		}
	}

	log.Info("draining", "streams", g.streams.OpenStreams(), "window", cfg.Drain.String())
	// The window, then each goodbye's write timeout at most, then some slack.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), cfg.Drain+cfg.WriteTimeout+5*time.Second)
	defer cancelDrain()
	var shut sync.WaitGroup
	for _, s := range servers {
		shut.Go(func() { _ = s.Shutdown(drainCtx) })
	}
	g.streams.Drain(drainCtx, cfg.Drain)
	shut.Wait()
	cancelRun()
	err = group.Wait()
	log.Info("stopped")
	return err
}

// ready reports whether the instance should get traffic: the broker subscription is live,
// the keys in Redis (if used) have been read, and it is not draining. With keys in Redis an
// instance is not ready before it has read them: it would refuse every stream with 401.
func (g *Gateway) ready() bool {
	return g.broker.ready() && !g.streams.Draining() && (g.redisKeys == nil || g.redisKeys.Loaded())
}

// RedisOptions parses a --redis-url and, when passwordFile is set (--redis-password-file),
// makes it authenticate to its data nodes with the file's password instead of the URL's (a
// Sentinel's own password stays the URL's sentinel_password).
func RedisOptions(redisURL, passwordFile string) (*redisconn.Options, error) {
	o, err := redisconn.Parse(redisURL)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	if passwordFile == "" {
		return o, nil
	}
	password, err := ReadSecret("--redis-password-file", passwordFile)
	if err != nil {
		return nil, err
	}
	switch {
	case o.Standalone != nil:
		o.Standalone.Password = password
	case o.Cluster != nil:
		o.Cluster.Password = password
	case o.Failover != nil:
		o.Failover.Password = password
	}
	return o, nil
}

func brokerName(redisURL string) string {
	if redisURL == "" {
		return "embedded"
	}
	if o, err := redisconn.Parse(redisURL); err == nil {
		return o.Mode.String() + " " + o.Redacted // never a password
	}
	return "redis"
}

// listen opens the listeners and builds their servers: --addr first, then --metrics-addr.
func (g *Gateway) listen() ([]*http.Server, []net.Listener, error) {
	cfg, log := &g.cfg, g.log
	metrics := metricsHandler(g.reg)
	public := stream.NewHTTPServer(g.router(metrics), cfg.ReadHeaderTimeout, log)
	public.ConnContext = g.streams.ConnContext
	// Plain HTTP/1.1 stream requests are opened without net/http (stream.Server.Listener);
	// with TLS every request goes through net/http, which does the handshake.
	plainPath := streamPath
	if cfg.TLSCert != "" {
		plainPath = ""
	}
	ln, err := g.streams.Listen(context.Background(), cfg.Addr, plainPath)
	if err != nil {
		return nil, nil, fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	servers, listeners := []*http.Server{public}, []net.Listener{ln}
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("--metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		servers = append(servers, stream.NewHTTPServer(metricsMux(metrics, cfg.Pprof), cfg.ReadHeaderTimeout, log))
		listeners = append(listeners, mln)
		log.Info("metrics listening", "addr", mln.Addr().String(), "pprof", cfg.Pprof)
	} else if cfg.Pprof {
		log.Warn("--pprof needs --metrics-addr: pprof is never served on the public listener")
	}
	return servers, listeners, nil
}
