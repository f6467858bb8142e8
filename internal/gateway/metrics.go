package gateway

import (
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/auth"
)

const namespace = "sse_gateway"

// registerGauges exports the instance-level gauges: readiness and the stream limit.
func (g *Gateway) registerGauges() {
	g.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "ready",
		Help: "1 while the instance is ready for traffic (broker subscription live, keys loaded, not draining).",
	}, func() float64 {
		if g.ready() {
			return 1
		}
		return 0
	}))
	limit := float64(g.cfg.MaxStreams)
	g.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: "streams_limit",
		Help: "The instance's stream limit (--max-streams); 0 when unlimited.",
	}, func() float64 { return limit }))
}

func buildInfo(version string) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: namespace, Name: "build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version, runtime.Version()).Set(1)
	return g
}

// labelChannels is the channel-label policy: a channel's name may be a metric label value
// only when it matches one of the comma-separated patterns (--metrics-channels), since
// channel names are unbounded. It returns nil (label none) when there are no patterns.
func labelChannels(patterns string) func(string) bool {
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
