package subscribe

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

const namespace = "sse_gateway"

// Reasons an event from the subscription is rejected, used as the "reason" label of
// sse_gateway_events_malformed_total.
const (
	MalformedTooLarge     = "too_large"     // wire.ErrTooLarge
	MalformedNotObject    = "not_object"    // wire.ErrNotObject
	MalformedETag         = "etag"          // wire.ErrETag
	MalformedLastModified = "last_modified" // wire.ErrLastModified
	MalformedType         = "type"          // wire.ErrType
	MalformedChannel      = "channel"       // a channel name no stream can subscribe to
)

var malformedReasons = []string{
	MalformedTooLarge, MalformedNotObject, MalformedETag, MalformedLastModified, MalformedType,
	MalformedChannel,
}

// malformedReason maps a wire.ParsePayload error to its label.
func malformedReason(err error) string {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return MalformedTooLarge
	case errors.Is(err, wire.ErrETag):
		return MalformedETag
	case errors.Is(err, wire.ErrLastModified):
		return MalformedLastModified
	case errors.Is(err, wire.ErrType):
		return MalformedType
	default:
		return MalformedNotObject
	}
}

type metrics struct {
	received   prometheus.Counter
	malformed  *prometheus.CounterVec
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	probeRTT   prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_received_total",
			Help: "Events received from the Redis subscription (probes excluded), valid or not.",
		}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_malformed_total",
			Help: "Events from the Redis subscription rejected as malformed, by reason.",
		}, []string{"reason"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_connected",
			Help: "1 while the Redis pattern subscription is confirmed on a live connection, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "redis_reconnects_total",
			Help: "Attempts to re-subscribe to Redis after the subscription failed or went silent.",
		}),
		probeRTT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "redis_probe_rtt_seconds",
			Help:    "Round trip of the liveness probe: PUBLISH until it arrives on the subscription.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
	}
	for _, r := range malformedReasons {
		m.malformed.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.received, m.malformed, m.connected, m.reconnects, m.probeRTT)
	}
	return m
}
