package main

import (
	"fmt"
	"math"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// The coordinator re-executes its own binary as worker processes, each holding at most
// --streams-per-worker sockets (a process may open 20,000 files here). They talk in JSON
// lines: the coordinator writes workerConfig, then commands, to a worker's stdin; the
// worker answers each with one workerMsg on stdout.

// workerEnv marks a process as a worker.
const workerEnv = "SSE_FLEETLOAD_WORKER"

type workerConfig struct {
	Index              int      `json:"index"`
	Targets            []string `json:"targets"` // gateway host:port, all in 127.0.0.0/8
	Path               string   `json:"path"`    // /event-stream?key=...
	Lo                 int      `json:"lo"`      // global stream indices [Lo, Hi)
	Hi                 int      `json:"hi"`
	Channels           int      `json:"channels"`
	ZipfS              float64  `json:"zipf_s"`
	Streams            int      `json:"streams"`
	ChannelPrefix      string   `json:"channel_prefix"`
	SourceIPs          int      `json:"source_ips"`
	ConnectConcurrency int      `json:"connect_concurrency"`
	ConnectTimeoutMs   int64    `json:"connect_timeout_ms"`
	MaxRounds          int      `json:"max_rounds"`
	DeadlineUnixNs     int64    `json:"deadline_ns"` // the worker exits by itself after this
}

type command struct {
	Cmd string `json:"cmd"` // connect, phase, progress, shed, check, finish
	// phase: deliveries of rounds from this one on are measured (latency, per publish).
	Round int `json:"round,omitempty"`
	// shed: close (for good) every ShedEvery-th stream of each gateway (isShed).
	ShedEvery int `json:"shed_every,omitempty"`
	// check: the newest published round per channel (-1: none).
	Newest []int32 `json:"newest,omitempty"`
}

type workerMsg struct {
	Type  string `json:"type"`
	Error string `json:"error,omitempty"`

	// connected
	Established int             `json:"established,omitempty"`
	Failed      int             `json:"failed,omitempty"`
	Errors      map[string]int  `json:"errors,omitempty"`
	FirstDialNs int64           `json:"first_dial_ns,omitempty"`
	LastUpNs    int64           `json:"last_up_ns,omitempty"`
	ConnectLat  *stats.Snapshot `json:"connect_lat,omitempty"`
	PerTarget   []int           `json:"per_target,omitempty"` // open streams per target

	// progress
	RoundCounts []int64 `json:"round_counts,omitempty"` // deliveries per round
	Down        int     `json:"down,omitempty"`         // streams between a close by a server and their reconnect
	Live        int     `json:"live,omitempty"`         // streams not shed

	// check
	Missed       int    `json:"missed,omitempty"`
	MissedSample string `json:"missed_sample,omitempty"`

	// result
	RoundLat        []stats.Snapshot `json:"round_lat,omitempty"` // per measured round
	Seqs            []stats.SeqCount `json:"seqs,omitempty"`
	ClosesNs        []int64          `json:"closes_ns,omitempty"`     // a server closed a stream
	ReconnectsNs    []int64          `json:"reconnects_ns,omitempty"` // a reconnect succeeded
	ResumedWithID   int              `json:"resumed_with_id,omitempty"`
	ReconnectErrors map[string]int   `json:"reconnect_errors,omitempty"`
	GaveUp          int              `json:"gave_up,omitempty"`
	Duplicates      uint64           `json:"duplicates,omitempty"`
	ProtocolErrors  uint64           `json:"protocol_errors,omitempty"`
	ProtocolSample  string           `json:"protocol_sample,omitempty"`
}

// plan assigns streams to channels with a Zipf-like law: channel c gets weight
// 1/(c+1)^s, every channel at least one stream, the rest by largest remainder. Streams
// of a channel have consecutive indices; the result maps stream index to channel.
func plan(streams, channels int, s float64) ([]int32, error) {
	if channels <= 0 || streams < channels {
		return nil, fmt.Errorf("need at least one stream per channel: %d streams, %d channels", streams, channels)
	}
	w := make([]float64, channels)
	var sum float64
	for c := range w {
		w[c] = 1 / math.Pow(float64(c+1), s)
		sum += w[c]
	}
	rest := streams - channels
	counts := make([]int, channels)
	given := 0
	frac := make([]float64, channels)
	for c := range w {
		exact := float64(rest) * w[c] / sum
		counts[c] = 1 + int(exact)
		given += int(exact)
		frac[c] = exact - math.Floor(exact)
	}
	// Largest remainder: hand out what flooring left, biggest fractions first (ties: lower c).
	for ; given < rest; given++ {
		best := 0
		for c := range frac {
			if frac[c] > frac[best] {
				best = c
			}
		}
		counts[best]++
		frac[best] = -1
	}
	out := make([]int32, 0, streams)
	for c, n := range counts {
		for range n {
			out = append(out, int32(c))
		}
	}
	return out, nil
}

// perChannel counts the streams of each channel in a plan.
func perChannel(p []int32, channels int) []int {
	n := make([]int, channels)
	for _, c := range p {
		n[c]++
	}
	return n
}
