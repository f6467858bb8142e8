package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/api"
	"github.com/sse-gateway/sse-gateway/internal/auth"
	"github.com/sse-gateway/sse-gateway/internal/httperr"
	"github.com/sse-gateway/sse-gateway/internal/hub"
	"github.com/sse-gateway/sse-gateway/internal/quota"
	"github.com/sse-gateway/sse-gateway/internal/store"
	"github.com/sse-gateway/sse-gateway/internal/stream"
	"github.com/sse-gateway/sse-gateway/internal/subscribe"
	"github.com/sse-gateway/sse-gateway/internal/wire"
)

// broker is what serve needs of the embedded or the Redis broker.
type broker interface {
	api.Publisher
	stream.Store
	Run(ctx context.Context) error
	Ready() bool
}

// redisBroker publishes through the store and feeds the hub through the subscriber.
type redisBroker struct {
	store *store.Redis
	*subscribe.Redis
}

// Publish publishes through the store.
func (b redisBroker) Publish(ctx context.Context, channel string, p wire.Payload) (bool, error) {
	return b.store.Publish(ctx, channel, p)
}

func runServe(args []string) int {
	var cfg serveConfig
	fs := flag.NewFlagSet("sse-gateway serve", flag.ContinueOnError)
	serveFlags(fs, &cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sse-gateway [serve] [flags]\n\nEvery flag can also be set by the environment variable shown in `sse-gateway flags`.\n\n")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "sse-gateway:", err)
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "sse-gateway:", err)
		return 2
	}
	log := newLogger(cfg.LogFormat, cfg.LogLevel)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("gateway stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(format, level string) *slog.Logger {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// serve runs the gateway until ctx is cancelled (SIGTERM/SIGINT), then drains.
func serve(ctx context.Context, cfg serveConfig, log *slog.Logger) error {
	if cfg.InstanceID == "" {
		host, _ := os.Hostname()
		cfg.InstanceID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = defaultMaxStreams()
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(buildInfo())

	h := hub.New(hub.Config{LabelChannel: channelLabeler(cfg.MetricsChannels)}, reg)
	defer h.Close()

	storeCfg := store.Config{ChannelPrefix: cfg.ChannelPrefix, KeyPrefix: cfg.KeyPrefix, LatestTTL: cfg.LatestTTL}
	var (
		b   broker
		rdb redis.UniversalClient
	)
	if cfg.RedisURL == "" {
		b = store.NewMemory(h, storeCfg)
	} else {
		var err error
		if rdb, err = newRedisClient(cfg.RedisURL); err != nil {
			return err
		}
		defer rdb.Close()
		st := store.NewRedis(rdb, storeCfg)
		sub := subscribe.NewRedis(rdb, st, h, subscribe.Config{
			MaxPayload:    cfg.MaxPayload,
			ProbeInterval: cfg.ProbeInterval,
			InstanceID:    cfg.InstanceID,
		}, log, reg)
		b = redisBroker{st, sub}
	}

	keys := auth.NewStore()
	adminToken, err := setUpKeys(cfg, keys, log)
	if err != nil {
		return err
	}

	var keyQuota stream.KeyQuota // nil: no per-key limit
	var quotas *quota.Quota
	if cfg.MaxStreamsPerKey > 0 {
		quotas, err = quota.New(rdb, quota.Config{Limit: cfg.MaxStreamsPerKey, KeyPrefix: cfg.KeyPrefix, Instance: cfg.InstanceID}, log)
		if err != nil {
			return err
		}
		keyQuota = quotas
	}

	proxies, _ := cfg.trustedProxies()
	streams, err := stream.New(stream.Config{
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
	}, h, keys, b, keyQuota, log, reg)
	if err != nil {
		return err
	}

	var redisKeys *auth.RedisSource
	if cfg.KeysRedis {
		redisKeys = auth.NewRedisSource(auth.NewRedisKeys(rdb, cfg.KeyPrefix), keys, streams.CloseKeys, auth.RedisSourceConfig{}, log)
	}

	// With keys in Redis, an instance is not ready before it has read them: it would refuse
	// every stream with 401.
	ready := func() bool {
		return b.Ready() && !streams.Draining() && (redisKeys == nil || redisKeys.Loaded())
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "sse_gateway", Name: "ready",
		Help: "1 while the instance is ready for traffic (broker subscription live, keys loaded, not draining).",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))

	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "sse_gateway", Name: "streams_limit",
		Help: "The instance's stream limit (--max-streams); 0 when unlimited.",
	}, func() float64 { return float64(cfg.MaxStreams) }))

	health := &api.Health{Ready: ready}
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httperr.Write(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httperr.Write(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	r.Handle("/event-stream", streams)
	r.Handle("/v1/publish", &api.Publish{Broker: b, Token: adminToken, MaxPayload: cfg.MaxPayload}).Methods(http.MethodPost)
	r.HandleFunc("/healthz", health.Live).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", health.Readiness).Methods(http.MethodGet, http.MethodHead)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	if cfg.MetricsAddr == "" {
		r.Handle("/metrics", metricsHandler).Methods(http.MethodGet)
	}

	srv := newHTTPServer(r, cfg.ReadHeaderTime, log)
	srv.ConnContext = streams.ConnContext
	// No kernel keepalive probes: heartbeats and TCP_USER_TIMEOUT (set per connection by
	// the stream server) find dead peers sooner, and every accepted connection saves the
	// setsockopt calls — connect storms are syscall-bound.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", cfg.Addr, err)
	}
	var servers []*http.Server
	var listeners []net.Listener
	servers, listeners = append(servers, srv), append(listeners, ln)
	if cfg.MetricsAddr != "" {
		mr := http.NewServeMux()
		mr.Handle("/metrics", metricsHandler)
		if cfg.Pprof {
			mr.HandleFunc("/debug/pprof/", pprof.Index)
			mr.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mr.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mr.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mr.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("--metrics-addr %s: %w", cfg.MetricsAddr, err)
		}
		servers, listeners = append(servers, newHTTPServer(mr, cfg.ReadHeaderTime, log)), append(listeners, mln)
		log.Info("metrics listening", "addr", mln.Addr().String(), "pprof", cfg.Pprof)
	} else if cfg.Pprof {
		log.Warn("--pprof needs --metrics-addr: pprof is never served on the public listener")
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	var wg sync.WaitGroup
	errc := make(chan error, 8) // room for every goroutine below: a send must never block
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && runCtx.Err() == nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goRun("broker", b.Run)
	goRun("streams", streams.Run)
	if quotas != nil {
		goRun("quota", quotas.Run)
	}
	if redisKeys != nil {
		goRun("redis keys", redisKeys.Run)
	}
	for i, s := range servers {
		s, l := s, listeners[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i == 0 && cfg.TLSCert != "" {
				err = s.ServeTLS(l, cfg.TLSCert, cfg.TLSKey)
			} else {
				err = s.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http %s: %w", l.Addr(), err)
			}
		}()
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	log.Info("listening", "addr", ln.Addr().String(), "scheme", scheme, "broker", brokerName(cfg.RedisURL),
		"instance", cfg.InstanceID, "max_streams", cfg.MaxStreams, "version", version)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			runErr = err
			break loop
		case <-hup:
			reloadKeys(cfg, keys, streams, log)
			if redisKeys != nil {
				redisKeys.Reload()
			}
		}
	}

	// Drain: not ready at once, stop accepting, close streams spread over the window with
	// jittered retry: so that clients come back (elsewhere) gradually.
	log.Info("draining", "streams", streams.OpenStreams(), "window", cfg.Drain.String())
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), cfg.Drain+5*time.Second)
	defer cancelDrain()
	var shut sync.WaitGroup
	for _, s := range servers {
		shut.Add(1)
		go func() {
			defer shut.Done()
			_ = s.Shutdown(drainCtx)
		}()
	}
	streams.Drain(drainCtx, cfg.Drain)
	shut.Wait()
	cancelRun()
	wg.Wait()
	log.Info("stopped")
	return runErr
}

func newHTTPServer(h http.Handler, readHeaderTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		// Never a WriteTimeout: it would kill every stream. Streams set per-write deadlines.
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       60 * time.Second,
		// Room for a 1 MB URL to reach the handler and get a JSON 414 rather than a bare
		// 431; ReadHeaderTimeout bounds how long such a request may hold memory.
		MaxHeaderBytes: 2 << 20,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

func brokerName(redisURL string) string {
	if redisURL == "" {
		return "embedded"
	}
	if u, err := url.Parse(redisURL); err == nil {
		return u.Scheme + "://" + u.Host // never the password
	}
	return "redis"
}

// setUpKeys loads the keys file (or generates a key for a first run) and returns the admin
// token (generated when not configured).
func setUpKeys(cfg serveConfig, keys *auth.Store, log *slog.Logger) (string, error) {
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
	switch {
	case cfg.KeysFile != "":
		ks, err := auth.LoadFile(cfg.KeysFile)
		if err != nil {
			return "", err
		}
		keys.SetSource("file", ks)
		log.Info("keys loaded", "file", cfg.KeysFile, "keys", len(ks))
	case !cfg.KeysRedis:
		secret, err := auth.Generate()
		if err != nil {
			return "", err
		}
		keys.SetSource("generated", []auth.Key{{Name: "default", Hash: auth.HashKey(secret), Channels: []string{"*"}}})
		// The one place a key is logged: a first run with no configuration needs it to be
		// usable at all. Configure --keys-file for anything real.
		log.Warn("no --keys-file: generated a key for this run (any channel)",
			"key", secret,
			"try", fmt.Sprintf("curl -N 'http://127.0.0.1:%s/event-stream?v=1.2&channels=demo&key=%s'", port, secret))
	}
	if cfg.AdminToken == "" {
		log.Warn("no --admin-token: generated one for this run",
			"admin_token", token,
			"publish", fmt.Sprintf("sse-gateway publish --gateway http://127.0.0.1:%s --admin-token %s --channel demo --etag '\"v1\"'", port, token))
	}
	return token, nil
}

// reloadKeys re-reads the keys file on SIGHUP and closes the streams of removed keys. A bad
// file keeps the old keys: a typo must not lock every SDK out.
func reloadKeys(cfg serveConfig, keys *auth.Store, streams *stream.Server, log *slog.Logger) {
	if cfg.KeysFile == "" {
		return
	}
	ks, err := auth.LoadFile(cfg.KeysFile)
	if err != nil {
		log.Error("SIGHUP: keys file rejected, keeping the current keys", "err", err)
		return
	}
	revoked := keys.SetSource("file", ks)
	closed := streams.CloseKeys(revoked)
	log.Info("SIGHUP: keys reloaded", "keys", len(ks), "revoked", len(revoked), "streams_closed", closed)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func buildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "sse_gateway", Name: "build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	return g
}

// channelLabeler turns --metrics-channels into the hub's allow-list; nil when empty.
func channelLabeler(patterns string) func(string) bool {
	var ps []string
	for _, p := range strings.Split(patterns, ",") {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return func(channel string) bool {
		for _, p := range ps {
			if auth.Match(p, channel) {
				return true
			}
		}
		return false
	}
}
