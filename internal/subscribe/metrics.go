package subscribe

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sse-gateway/sse-gateway/internal/wire"
)

const namespace = "sse_gateway"

// MalformedReason says why an event from the subscription was rejected. Its String is the
// "reason" label of sse_gateway_events_malformed_total.
type MalformedReason uint8

// Malformed reasons.
const (
	MalformedTooLarge     MalformedReason = iota // wire.ErrTooLarge
	MalformedNotObject                           // wire.ErrNotObject
	MalformedETag                                // wire.ErrETag
	MalformedLastModified                        // wire.ErrLastModified
	MalformedType                                // wire.ErrType
	MalformedChannel                             // a channel name no stream can subscribe to
	MalformedFuture                              // wire.ErrFuture
	MalformedConflict                            // the lastModified of another config of the channel (store.ErrConflict)
	numMalformedReasons
)

var malformedLabels = [numMalformedReasons]string{
	MalformedTooLarge:     "too_large",
	MalformedNotObject:    "not_object",
	MalformedETag:         "etag",
	MalformedLastModified: "last_modified",
	MalformedType:         "type",
	MalformedChannel:      "channel",
	MalformedFuture:       "future",
	MalformedConflict:     "conflict",
}

// String returns the reason's metric label.
func (r MalformedReason) String() string {
	if r < numMalformedReasons {
		return malformedLabels[r]
	}
	return "unknown"
}

// malformedReason maps a wire.ParsePayload error to its reason.
func malformedReason(err error) MalformedReason {
	switch {
	case errors.Is(err, wire.ErrTooLarge):
		return MalformedTooLarge
	case errors.Is(err, wire.ErrETag):
		return MalformedETag
	case errors.Is(err, wire.ErrLastModified):
		return MalformedLastModified
	case errors.Is(err, wire.ErrType):
		return MalformedType
	case errors.Is(err, wire.ErrFuture):
		return MalformedFuture
	default:
		return MalformedNotObject
	}
}

// metrics are the subscriber's collectors; every field is safe for concurrent use.
type metrics struct {
	received   prometheus.Counter
	superseded prometheus.Counter // replaced in the mailbox by a newer event of their channel
	malformed  *prometheus.CounterVec
	rejected   [numMalformedReasons]prometheus.Counter // malformed, by reason
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	probeRTT   prometheus.Histogram
	// resyncPending is how many channels the last resync pass could not read or write
	// back, and retries.
	resyncPending prometheus.Gauge
	// seedPending and writeBackPending are the channels waiting for (or in) a store lookup
	// for new streams, and for their received event to be stored; writeBackDropped counts
	// events not stored because too many channels were waiting.
	seedPending      prometheus.Gauge
	writeBackPending prometheus.Gauge
	writeBackDropped prometheus.Counter
	// Sharded pub/sub: channels with a confirmed shard subscription, SSUBSCRIBE and
	// SUNSUBSCRIBE commands sent, and each shard connection's node (1 while held).
	shardSubs   prometheus.Gauge
	shardOps    *prometheus.CounterVec
	shardNodeUp *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_received_total",
			Help: "Events received from the Redis subscription (probes excluded), valid or not.",
		}),
		superseded: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_superseded_total",
			Help: "Events from Redis replaced by a newer event of their channel before a dispatcher took them (delivery behind the event rate): the newer one is delivered, the older never.",
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
		resyncPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_resync_pending_channels",
			Help: "Channels whose stored newest event the last resync could not read or write back (a Redis node down); they are retried.",
		}),
		seedPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_seed_pending_channels",
			Help: "Channels new streams subscribed to whose stored newest event is being looked up or, after a failure, waits to be again.",
		}),
		writeBackPending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_writeback_pending_channels",
			Help: "Channels whose received event waits to be stored as their newest (or is being stored).",
		}),
		writeBackDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "redis_writeback_dropped_total",
			Help: "Received events not stored as their channel's newest because too many channels waited (Redis slow or away).",
		}),
		shardSubs: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_shard_subscriptions",
			Help: "Channels with a confirmed shard subscription (--redis-pubsub sharded).",
		}),
		shardOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "redis_shard_operations_total",
			Help: "SSUBSCRIBE and SUNSUBSCRIBE commands sent, by op (--redis-pubsub sharded).",
		}, []string{"op"}),
		shardNodeUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "redis_shard_connection_up",
			Help: "1 for each cluster node a shard-subscription connection is held on (--redis-pubsub sharded).",
		}, []string{"node"}),
	}
	for _, op := range []string{"subscribe", "unsubscribe"} {
		m.shardOps.WithLabelValues(op)
	}
	for r := range numMalformedReasons {
		m.rejected[r] = m.malformed.WithLabelValues(r.String())
	}
	if reg != nil {
		reg.MustRegister(m.received, m.superseded, m.malformed, m.connected, m.reconnects, m.probeRTT, m.resyncPending, m.seedPending, m.writeBackPending, m.writeBackDropped, m.shardSubs, m.shardOps, m.shardNodeUp)
	}
	return m
}
