package gateway

import (
	"net/http"
	"net/http/pprof"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sse-gateway/sse-gateway/internal/api"
	"github.com/sse-gateway/sse-gateway/internal/httperr"
)

// streamPath is where streams are served.
const streamPath = "/event-stream"

// router serves --addr: streams, the publish API, health, readiness and, without
// --metrics-addr, metrics. Unknown paths and methods get the gateway's JSON error.
func (g *Gateway) router(metrics http.Handler) http.Handler {
	health := &api.Health{Ready: g.ready}
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httperr.Write(w, http.StatusNotFound, "not found")
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		httperr.Write(w, http.StatusMethodNotAllowed, "method not allowed")
	})
	r.Handle(streamPath, g.streams)
	r.Handle("/v1/publish", &api.Publish{Broker: g.broker.publisher, Token: g.adminToken, MaxPayload: g.cfg.MaxPayload, MaxClockSkew: g.cfg.MaxClockSkew, ClientAddr: g.streams.ClientAddr}).Methods(http.MethodPost)
	r.HandleFunc("/healthz", health.Live).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", health.Readiness).Methods(http.MethodGet, http.MethodHead)
	if g.cfg.MetricsAddr == "" {
		r.Handle("/metrics", metrics).Methods(http.MethodGet)
	}
	return streamsFirst{streams: g.streams, rest: r}
}

// streamsFirst hands stream requests to the stream server without going through the router:
// they are nearly all the requests --addr serves, and gorilla/mux's match copies each request
// (the route goes in a new context), garbage a connect storm pays for in GC. Any other path,
// and a stream path the router would clean up or redirect, goes to the router as before.
type streamsFirst struct{ streams, rest http.Handler }

func (h streamsFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == streamPath {
		h.streams.ServeHTTP(w, r)
		return
	}
	h.rest.ServeHTTP(w, r)
}

// metricsMux serves --metrics-addr: /metrics, and /debug/pprof when enabled (never on the
// public listener). Of pprof, /debug/pprof/cmdline is not served: a command line may hold
// secrets (--admin-token, a password in --redis-url).
func metricsMux(metrics http.Handler, withPprof bool) http.Handler {
	mr := http.NewServeMux()
	mr.Handle("/metrics", metrics)
	if withPprof {
		mr.HandleFunc("/debug/pprof/", pprof.Index)
		mr.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mr.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mr.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mr
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
