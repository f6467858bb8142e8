package main

import (
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// The coordinator re-executes its own binary as worker processes (each holds
// at most --conns-per-worker sockets, under the per-process open-files cap).
// They talk in JSON lines: the coordinator writes workerConfig then commands
// to the worker's stdin; the worker answers on stdout.

// workerEnv marks a process as a worker; its value is the worker index.
const workerEnv = "SSE_LOADGEN_WORKER"

type workerConfig struct {
	Index              int     `json:"index"`
	Addr               string  `json:"addr"`    // host:port to dial
	URL                string  `json:"url"`     // --url (path, query) without channels
	HostHeader         string  `json:"host"`    // Host: header
	ConnLo             int     `json:"conn_lo"` // global connection indices [lo, hi)
	ConnHi             int     `json:"conn_hi"`
	Channels           int     `json:"channels"`
	ChannelPrefix      string  `json:"channel_prefix"`
	SourceIPs          int     `json:"source_ips"`
	SlowPerMille       int     `json:"slow_per_mille"`
	SlowRcvBuf         int     `json:"slow_rcvbuf"`
	ConnectConcurrency int     `json:"connect_concurrency"`
	ConnectRate        float64 `json:"connect_rate"` // per second, this worker; 0 = unlimited
	ConnectTimeoutMs   int64   `json:"connect_timeout_ms"`
	Strict             bool    `json:"strict"`
	MaxSeq             int64   `json:"max_seq"`     // sequence numbers are 1..MaxSeq
	DeadlineUnixNs     int64   `json:"deadline_ns"` // the worker exits by itself after this
	ReadBuf            int     `json:"read_buf"`
}

type command struct {
	Cmd     string `json:"cmd"` // "phase", "progress", "finish"
	StartNs int64  `json:"start_ns,omitempty"`
}

type workerMsg struct {
	Type string `json:"type"` // "connected", "ack", "progress", "result", "fatal"

	// connected
	Attempted   int             `json:"attempted,omitempty"`
	Established int             `json:"established,omitempty"`
	Failed      int             `json:"failed,omitempty"`
	Errors      map[string]int  `json:"errors,omitempty"`
	Slow        int             `json:"slow,omitempty"`
	Readers     []int           `json:"readers,omitempty"` // established readers per channel index
	FirstDialNs int64           `json:"first_dial_ns,omitempty"`
	LastUpNs    int64           `json:"last_up_ns,omitempty"`
	ConnectLat  *stats.Snapshot `json:"connect_lat,omitempty"`

	// progress and result
	Delivered     uint64 `json:"delivered,omitempty"`
	ClosedReaders int    `json:"closed_readers,omitempty"`

	// result
	PrePhase       uint64           `json:"pre_phase,omitempty"`
	Duplicates     uint64           `json:"duplicates,omitempty"`
	OtherEvents    uint64           `json:"other_events,omitempty"`
	Comments       uint64           `json:"comments,omitempty"`
	ProtocolErrors uint64           `json:"protocol_errors,omitempty"`
	ProtocolSample string           `json:"protocol_sample,omitempty"`
	ClosedSlow     int              `json:"closed_slow,omitempty"`
	Latency        *stats.Snapshot  `json:"latency,omitempty"`
	Seqs           []stats.SeqCount `json:"seqs,omitempty"`

	// fatal
	Error string `json:"error,omitempty"`
}
