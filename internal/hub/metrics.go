package hub

import "github.com/prometheus/client_golang/prometheus"

const namespace = "sse_gateway"

// DropReason says why a message was not fanned out. Its String is the "reason" label of
// sse_gateway_events_dropped_total.
type DropReason uint8

// Drop reasons.
const (
	// DropStale: older than the channel's newest message (a replay or a lost race).
	DropStale DropReason = iota
	// DropDuplicate: the same version as the channel's newest (a redelivery).
	DropDuplicate
	numDropReasons
)

var dropReasonLabels = [numDropReasons]string{DropStale: "stale", DropDuplicate: "duplicate"}

// String returns the reason's metric label.
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropReasonLabels[r]
	}
	return "unknown"
}

// metrics are the hub's collectors; every field is safe for concurrent use.
type metrics struct {
	fanout        prometheus.Histogram
	dropped       *prometheus.CounterVec
	drops         [numDropReasons]prometheus.Counter // dropped, by reason
	subscriptions prometheus.Gauge
	channels      prometheus.GaugeFunc
	chanSubs      *prometheus.GaugeVec
	chanEvents    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "fanout_duration_seconds",
			Help:    "Time from the broker handing the gateway an event to the last subscriber being offered it.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_dropped_total",
			Help: "Events not fanned out because the channel already had that version or a newer one.",
		}, []string{"reason"}),
		subscriptions: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "subscriptions",
			Help: "Subscriptions registered in the hub (one per open stream).",
		}),
		chanSubs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "channel_subscriptions",
			Help: "Subscriptions per channel, for the channels an operator allow-listed (--metrics-channels).",
		}, []string{"channel"}),
		chanEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "channel_events_total",
			Help: "Events fanned out per channel, for the channels an operator allow-listed (--metrics-channels).",
		}, []string{"channel"}),
	}
	for r := range numDropReasons {
		m.drops[r] = m.dropped.WithLabelValues(r.String())
	}
	if reg != nil {
		reg.MustRegister(m.fanout, m.dropped, m.subscriptions, m.chanSubs, m.chanEvents)
	}
	return m
}
