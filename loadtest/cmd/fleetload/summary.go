package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
	"github.com/sse-gateway/sse-gateway/loadtest/internal/stats"
)

// summary is what a run measured; it is written as JSON (--json) and as the report.
type summary struct {
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`

	Streams          int     `json:"streams"`
	Channels         int     `json:"channels"`
	Gateways         int     `json:"gateways"`
	Workers          int     `json:"workers"`
	ZipfS            float64 `json:"zipf_s"`
	Largest          int     `json:"largest_channel"`
	Smallest         int     `json:"smallest_channel"`
	ChannelsUpTo2    int     `json:"channels_up_to_2"`
	ChannelsOver1000 int     `json:"channels_over_1000"`

	Established    int             `json:"established"`
	Failed         int             `json:"failed"`
	ConnectErrors  map[string]int  `json:"connect_errors,omitempty"`
	ConnectS       float64         `json:"connect_s"` // first dial to last stream open
	ConnectLatency stats.Quantiles `json:"connect_latency"`

	GatewayCPUConnectS float64 `json:"gateway_cpu_connect_s"`
	CPUPerConnectUs    float64 `json:"cpu_per_connect_us"`
	GatewayCPUPublishS float64 `json:"gateway_cpu_publish_s"`
	CPUPerDeliveryUs   float64 `json:"cpu_per_delivery_us"`
	// RedisMessagesPerPublishPerGateway: sse_gateway_events_received_total over the
	// measured rounds, per publish and gateway.
	RedisMessagesPerPublishPerGateway float64 `json:"redis_messages_per_publish_per_gateway"`
	ShedNoticedS                      float64 `json:"shed_noticed_s"`
	// RedisCPUPerMessageUs: redis-server's CPU over the measured rounds per message it sent
	// to a subscriber (publishes × gateways), with --redis-pid.
	RedisCPUPublishS     float64           `json:"redis_cpu_publish_s"`
	RedisCPUPerMessageUs float64           `json:"redis_cpu_per_message_us"`
	PerGateway           []gatewayResult   `json:"per_gateway"`
	SockBefore           procstat.Sockstat `json:"sockstat_before"`
	SockAfter            procstat.Sockstat `json:"sockstat_after"`
	SlabBefore           int64             `json:"slab_before"`
	SlabAfter            int64             `json:"slab_after"`

	Rounds      []roundResult  `json:"rounds"`
	LatencyHist stats.Snapshot `json:"latency_hist"`

	Drain              string         `json:"drain"`
	DrainStreams       int            `json:"drain_streams"` // live when SIGTERM was sent
	DrainedGateway     string         `json:"drained_gateway"`
	DrainedStreams     int            `json:"drained_streams"`
	SigtermNs          int64          `json:"sigterm_ns"`
	GatewayExitS       float64        `json:"gateway_exit_s"`
	DrainRounds        int            `json:"drain_rounds"`
	DrainMissed        int            `json:"drain_missed"`
	DrainMissedSample  string         `json:"drain_missed_sample,omitempty"`
	ClosesMs           []float64      `json:"-"` // since SIGTERM
	ReconnectsMs       []float64      `json:"-"` // since SIGTERM
	Closes             int            `json:"closes"`
	Reconnects         int            `json:"reconnects"`
	ClosesPer100ms     []int          `json:"closes_per_100ms"` // since SIGTERM
	ReconnectsPer100ms []int          `json:"reconnects_per_100ms"`
	CloseSpreadS       float64        `json:"close_spread_s"`
	ResumedWithID      int            `json:"resumed_with_id"`
	ReconnectErrors    map[string]int `json:"reconnect_errors,omitempty"`
	GaveUp             int            `json:"gave_up"`
	Duplicates         uint64         `json:"duplicates"`
	ProtocolErrors     uint64         `json:"protocol_errors"`
	ProtocolSample     string         `json:"protocol_sample,omitempty"`
}

// gatewayResult is one gateway's share and memory.
type gatewayResult struct {
	Addr          string  `json:"addr"`
	Streams       int     `json:"streams"`
	RSSBefore     int64   `json:"rss_before"`
	RSSAfter      int64   `json:"rss_after"`
	RSSPerStream  float64 `json:"rss_per_stream"`
	RSSAfterDrain int64   `json:"rss_after_drain,omitempty"`
}

// roundResult is one measured round: a publish on every channel.
type roundResult struct {
	Round         int             `json:"round"`
	AfterDrain    bool            `json:"after_drain,omitempty"`
	Streams       int             `json:"streams"`
	Latency       stats.Quantiles `json:"latency"`
	LastMs        float64         `json:"last_ms"`         // slowest delivery of the round
	LargestLastMs float64         `json:"largest_last_ms"` // last delivery of the largest channel's publish
	Incomplete    int             `json:"incomplete"`
}

// report writes the human summary: the figure block of docs/OPERATIONS.md.
func report(w io.Writer, s *summary, o *options) {
	kib := func(b float64) float64 { return b / 1024 }
	fmt.Fprintf(w, "fleet: %d streams over %d gateways (round-robin), %d channels (Zipf s=%.2g: largest %d streams, %d channels >= 1000, %d with 1-2), %d generator processes, %d source addresses\n",
		s.Streams, s.Gateways, s.Channels, s.ZipfS, s.Largest, s.ChannelsOver1000, s.ChannelsUpTo2, s.Workers, o.sourceIPs)
	fmt.Fprintf(w, "connect: %d of %d open in %.1fs (%.0f/s), %d failed; per stream p50 %.1fms p99 %.1fms max %.1fms; gateway CPU %.1fs = %.0f µs per connect\n",
		s.Established, s.Streams, s.ConnectS, float64(s.Established)/math.Max(s.ConnectS, 1e-9), s.Failed,
		s.ConnectLatency.P50, s.ConnectLatency.P99, s.ConnectLatency.Max, s.GatewayCPUConnectS, s.CPUPerConnectUs)
	var tot, totStreams int64
	for _, g := range s.PerGateway {
		fmt.Fprintf(w, "memory: gateway %s: %d streams, RSS %.1f -> %.1f MiB = %.2f KiB per stream\n",
			g.Addr, g.Streams, float64(g.RSSBefore)/(1<<20), float64(g.RSSAfter)/(1<<20), kib(g.RSSPerStream))
		tot += g.RSSAfter - g.RSSBefore
		totStreams += int64(g.Streams)
	}
	fmt.Fprintf(w, "memory: all gateways: %.2f KiB RSS per stream\n", kib(float64(tot)/math.Max(float64(totStreams), 1)))
	fmt.Fprintf(w, "kernel: TCP sockets in use %d -> %d, socket buffer memory %.1f -> %.1f MiB (both ends on this host: %.3f KiB per stream, idle)\n",
		s.SockBefore.InUse, s.SockAfter.InUse, float64(s.SockBefore.MemBytes)/(1<<20), float64(s.SockAfter.MemBytes)/(1<<20),
		kib(float64(s.SockAfter.MemBytes-s.SockBefore.MemBytes)/math.Max(float64(s.Established), 1)))
	fmt.Fprintf(w, "kernel: slab %.1f -> %.1f MiB = %.2f KiB per stream (two sockets each, the client's and the gateway's: %.2f KiB per socket; host-wide, other processes' noise included)\n",
		float64(s.SlabBefore)/(1<<20), float64(s.SlabAfter)/(1<<20), kib(float64(s.SlabAfter-s.SlabBefore)/math.Max(float64(s.Established), 1)),
		kib(float64(s.SlabAfter-s.SlabBefore)/math.Max(float64(2*s.Established), 1)))
	fmt.Fprintf(w, "publish: a round = one publish on each of the %d channels in one pipeline; gateway CPU %.2fs = %.2f µs per delivery; Redis messages received per publish per gateway %.3f",
		s.Channels, s.GatewayCPUPublishS, s.CPUPerDeliveryUs, s.RedisMessagesPerPublishPerGateway)
	if o.redisPID > 0 {
		fmt.Fprintf(w, "; redis-server CPU %.2fs = %.2f µs per message sent to a gateway", s.RedisCPUPublishS, s.RedisCPUPerMessageUs)
	}
	fmt.Fprintln(w)
	for _, r := range s.Rounds {
		when := "before the drain"
		if r.AfterDrain {
			when = "after the drain "
		}
		fmt.Fprintf(w, "publish: round %2d (%s): %d of %d streams, p50 %.1fms p99 %.1fms last %.1fms; largest channel's publish (%d streams) last %.1fms\n",
			r.Round, when, r.Latency.N, r.Streams, r.Latency.P50, r.Latency.P99, r.LastMs, s.Largest, r.LargestLastMs)
	}
	fmt.Fprintf(w, "drain: every %dth stream closed by the client first (room on the survivors); the gateways counted them closed %.1fs later\n", o.shedEvery, s.ShedNoticedS)
	fmt.Fprintf(w, "drain: %d streams live, SIGTERM to %s (%d streams, --drain %s): it exited after %.1fs; %d rounds published meanwhile\n",
		s.DrainStreams, s.DrainedGateway, s.DrainedStreams, s.Drain, s.GatewayExitS, s.DrainRounds)
	if len(s.ClosesMs) > 0 && len(s.ReconnectsMs) > 0 {
		fmt.Fprintf(w, "drain: %d closes from %.2fs to %.2fs after SIGTERM (spread %.1fs); %d reconnects to the others from %.2fs to %.2fs, %d with Last-Event-ID; failed attempts %v, gave up %d\n",
			len(s.ClosesMs), s.ClosesMs[0]/1e3, s.ClosesMs[len(s.ClosesMs)-1]/1e3, s.CloseSpreadS, len(s.ReconnectsMs),
			s.ReconnectsMs[0]/1e3, s.ReconnectsMs[len(s.ReconnectsMs)-1]/1e3, s.ResumedWithID, s.ReconnectErrors, s.GaveUp)
		fmt.Fprintf(w, "drain: reconnects per second after SIGTERM: %s\n", perSecond(s.ReconnectsMs))
	}
	fmt.Fprintf(w, "drain: streams without their channel's newest event afterwards: %d; duplicates %d, protocol errors %d\n",
		s.DrainMissed, s.Duplicates, s.ProtocolErrors)
	for _, g := range s.PerGateway[:len(s.PerGateway)-1] {
		fmt.Fprintf(w, "after: gateway %s RSS %.1f MiB\n", g.Addr, float64(g.RSSAfterDrain)/(1<<20))
	}
	if s.OK {
		fmt.Fprintln(w, "result: ok")
	} else {
		fmt.Fprintf(w, "result: FAILED: %s\n", strings.Join(s.Problems, "; "))
	}
}

// perSecond counts event times (ms) per whole second.
func perSecond(ms []float64) string {
	if len(ms) == 0 {
		return ""
	}
	n := int(ms[len(ms)-1]/1000) + 1
	counts := make([]int, n)
	for _, v := range ms {
		counts[max(0, int(v/1000))]++
	}
	parts := make([]string, n)
	for i, c := range counts {
		parts[i] = fmt.Sprintf("%ds:%d", i, c)
	}
	return strings.Join(parts, " ")
}
