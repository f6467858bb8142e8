// Package result defines the JSON summary the load generator prints as its
// last line, read back by the bench report.
package result

import (
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// Summary is one load generator run.
type Summary struct {
	Label     string     `json:"label"`
	Target    string     `json:"target"`
	StartedAt string     `json:"started_at"` // RFC 3339
	Config    Config     `json:"config"`
	Connect   Connect    `json:"connect"`
	Server    *Server    `json:"server,omitempty"`  // nil without --server-pid
	Publish   *Publish   `json:"publish,omitempty"` // nil when nothing was published
	Generator Generator  `json:"generator"`
	ElapsedS  float64    `json:"elapsed_s"`
	OK        bool       `json:"ok"`       // every connection up, every reader got every event, no protocol error
	Problems  []string   `json:"problems"` // why OK is false, or noteworthy observations
	Profiles  []string   `json:"profiles,omitempty"`
	Phases    []PhaseLog `json:"phases"`
}

// Config echoes the parameters that shape the figures.
type Config struct {
	Conns              int     `json:"conns"`
	Channels           int     `json:"channels"`
	ChannelPrefix      string  `json:"channel_prefix"`
	Workers            int     `json:"workers"`
	SourceIPs          int     `json:"source_ips"`
	ConnectConcurrency int     `json:"connect_concurrency"`
	ConnectRate        float64 `json:"connect_rate"`
	PublishesPerChan   int     `json:"publishes_per_channel"`
	PublishRate        float64 `json:"publish_rate,omitempty"`       // rate mode: asked publishes per second (0: rounds)
	PublishDurationS   float64 `json:"publish_duration_s,omitempty"` // rate mode: how long
	RoundSpreadMs      int64   `json:"round_spread_ms"`
	FillPublishes      int     `json:"fill_publishes"`
	FillChannels       int     `json:"fill_channels"`
	PadBytes           int     `json:"pad_bytes"`
	SlowFraction       float64 `json:"slow_fraction"`
	SlowRcvBuf         int     `json:"slow_rcvbuf"`
	Strict             bool    `json:"strict"`
}

// Connect is the connect phase.
type Connect struct {
	Attempted   int             `json:"attempted"`
	Established int             `json:"established"`
	Failed      int             `json:"failed"`
	Errors      map[string]int  `json:"errors,omitempty"` // failure reason -> count
	Slow        int             `json:"slow"`             // established connections that never read
	ElapsedS    float64         `json:"elapsed_s"`        // first dial to last established
	RatePerS    float64         `json:"rate_per_s"`       // established / elapsed
	Latency     stats.Quantiles `json:"latency"`          // dial start to response headers
	LatencyHist *stats.Snapshot `json:"latency_hist,omitempty"`
}

// Server is what /proc says about the server under test.
type Server struct {
	PID              int     `json:"pid"`
	RSSBefore        int64   `json:"rss_before_bytes"`
	RSSAfterConnect  int64   `json:"rss_after_connect_bytes"`
	RSSAfterPublish  int64   `json:"rss_after_publish_bytes,omitempty"`
	RSSMax           int64   `json:"rss_max_bytes"` // sampled every 100 ms during the run
	PerConnBytes     float64 `json:"per_conn_bytes"`
	PerConnKiB       float64 `json:"per_conn_kib"`
	Threads          int     `json:"threads_after_connect"`
	CPUConnectS      float64 `json:"cpu_connect_s"`
	CPUPerConnectUs  float64 `json:"cpu_per_connect_us"`
	CPUPublishS      float64 `json:"cpu_publish_s,omitempty"`
	CPUPerDeliveryUs float64 `json:"cpu_per_delivery_us,omitempty"`
	CPUPerPublishUs  float64 `json:"cpu_per_publish_us,omitempty"` // publish phase CPU / measured publishes
}

// Publish is the measured publish phase.
type Publish struct {
	Rounds            int             `json:"rounds"`
	Publishes         int             `json:"publishes"`
	FillPublishes     int             `json:"fill_publishes"`
	NoReceivers       int             `json:"no_receivers"` // PUBLISH replies of 0: nobody subscribed on Redis
	Expected          uint64          `json:"expected"`     // reader connections x publishes on their channel
	Delivered         uint64          `json:"delivered"`
	DeliveredFraction float64         `json:"delivered_fraction"`
	Incomplete        int             `json:"incomplete_publishes"` // publishes some reader never got
	PrePhaseFrames    uint64          `json:"pre_phase_frames"`     // events sent before the phase (replay, fill)
	Duplicates        uint64          `json:"duplicates"`           // same or older seq again on a connection
	OtherEvents       uint64          `json:"other_events"`         // event type other than message
	Comments          uint64          `json:"comments"`             // heartbeats
	ProtocolErrors    uint64          `json:"protocol_errors"`
	ProtocolSample    string          `json:"protocol_error_sample,omitempty"`
	ClosedReaders     int             `json:"closed_readers"` // reader streams the server ended during the run
	ClosedSlow        int             `json:"closed_slow"`    // slow streams found closed by the server at the end
	Latency           stats.Quantiles `json:"latency"`        // every delivery: receive time - sentAtNs
	LatencyHist       stats.Snapshot  `json:"latency_hist"`
	LastDelivery      stats.Quantiles `json:"last_delivery"` // per publish: the slowest delivery (complete publishes)
	LastDeliveryMs    []float64       `json:"last_delivery_ms"`
	ElapsedS          float64         `json:"elapsed_s"`
	TargetRatePerS    float64         `json:"target_rate_per_s,omitempty"` // rate mode: --publish-rate
	RatePerS          float64         `json:"rate_per_s,omitempty"`        // rate mode: publishes / publishing time
}

// Generator is the load generator's own cost, to judge its influence.
type Generator struct {
	CPUS        float64 `json:"cpu_s"`         // all processes, user+system
	MaxRSSBytes int64   `json:"max_rss_bytes"` // largest worker
	GoVersion   string  `json:"go_version"`
	// LoadAvg1 is the host's 1-minute load average (/proc/loadavg) at the start
	// and the end of the run: other work on the machine makes figures noisy.
	LoadAvg1Start float64 `json:"loadavg1_start"`
	LoadAvg1End   float64 `json:"loadavg1_end"`
}

// PhaseLog records when each phase ended, relative to the start.
type PhaseLog struct {
	Name string  `json:"name"`
	AtS  float64 `json:"at_s"`
}
