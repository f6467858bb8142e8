package stream

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

const namespace = "sse_gateway"

// CloseReason says why a stream ended. Its String is the "reason" label of
// sse_gateway_stream_closes_total; the zero value means the stream is not closing.
type CloseReason uint8

// Close reasons.
const (
	// CloseClient: the client went away (EOF, reset, or a write error).
	CloseClient CloseReason = iota + 1
	// CloseSlow: a write did not complete within the write timeout.
	CloseSlow
	// CloseDrain: the instance is shutting down.
	CloseDrain
	// CloseRevoked: the stream's key was removed or rotated.
	CloseRevoked
	// CloseLifetime: the stream reached its maximum lifetime.
	CloseLifetime
)

// closeReasonLabels are the metric labels of the close reasons, indexed by reason.
var closeReasonLabels = [...]string{
	CloseClient:   "client",
	CloseSlow:     "slow",
	CloseDrain:    "drain",
	CloseRevoked:  "revoked",
	CloseLifetime: "lifetime",
}

// String returns the reason's metric label ("" for the zero value).
func (r CloseReason) String() string {
	if int(r) < len(closeReasonLabels) {
		return closeReasonLabels[r]
	}
	return "unknown"
}

// Frame kinds: the "kind" label of sse_gateway_frames_written_total.
const (
	frameEvent     = "event"
	frameHeartbeat = "heartbeat"
	frameRetry     = "retry"
)

// Protocols: the "protocol" label of sse_gateway_streams_open.
const (
	protoHTTP1 = "http1"
	protoH2    = "h2"
)

// metrics are the stream server's collectors; every field is safe for concurrent use.
type metrics struct {
	open      *prometheus.GaugeVec
	opens     *prometheus.CounterVec
	closes    *prometheus.CounterVec
	closed    [len(closeReasonLabels)]prometheus.Counter // closes, by reason (index 0 unused)
	frames    *prometheus.CounterVec
	events    prometheus.Counter
	beats     prometheus.Counter
	bytes     prometheus.Counter
	coalesced prometheus.Counter
	age       prometheus.Histogram
	opened    prometheus.Counter // opens{result="ok"}: counted per connect, looked up once
	plain     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "streams_open",
			Help: "Open SSE streams by key name and protocol.",
		}, []string{"key", "protocol"}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "stream_opens_total",
			Help: "Stream requests by result: ok, or the HTTP status they were refused with.",
		}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "stream_closes_total",
			Help: "Closed streams by reason: client, slow, drain, revoked, lifetime.",
		}, []string{"reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "frames_written_total",
			Help: "SSE frames written to streams by kind: event, heartbeat, retry.",
		}, []string{"kind"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "written_bytes_total",
			Help: "Bytes written to streams, headers excluded.",
		}),
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "events_coalesced_total",
			Help: "Pending events replaced by a newer one on a stream that could not take writes (invalidations are idempotent, so only the newest is kept).",
		}),
		plain: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "stream_requests_plain_total",
			Help: "Stream requests read by the plain accept path, without net/http (a plain HTTP/1.1 GET that arrived whole); the rest go through net/http.",
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "event_age_seconds",
			Help:    "Age of an event (its lastModified) when it is written to a stream.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	for _, r := range []string{"ok", "400", "401", "403", "404", "414", "429", "503"} {
		m.opens.WithLabelValues(r)
	}
	for r := CloseClient; r <= CloseLifetime; r++ {
		m.closed[r] = m.closes.WithLabelValues(r.String())
	}
	m.opened = m.opens.WithLabelValues("ok")
	m.events = m.frames.WithLabelValues(frameEvent)
	m.beats = m.frames.WithLabelValues(frameHeartbeat)
	m.frames.WithLabelValues(frameRetry)
	if reg != nil {
		reg.MustRegister(m.open, m.opens, m.closes, m.frames, m.bytes, m.coalesced, m.age, m.plain)
	}
	return m
}

// refused counts a stream request answered with an error status instead of a stream.
func (m *metrics) refused(status int) {
	m.opens.WithLabelValues(strconv.Itoa(status)).Inc()
}
