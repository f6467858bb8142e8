package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// render writes the comparison as markdown tables: a summary per publish, then every
// gateway and every node.
func render(w io.Writer, cfg config, res []*modeResult) {
	fmt.Fprintf(w, "%d gateways, 3+3 Redis Cluster, %d channels (each streamed on %d gateway(s), %d stream(s) per gateway), %d publishes at %d/s round-robin over the channels\n\n",
		cfg.gateways, cfg.channels, cfg.spread, cfg.streamsPerChannel, cfg.publishes, cfg.rate)
	// Both summary tables have a column per run, named by its label.
	header := func(first string) {
		cells := []string{first}
		for _, r := range res {
			cells = append(cells, r.label)
		}
		writeHeader(w, cells)
	}
	row := func(name string, f func(r *modeResult) string) {
		cells := []string{name}
		for _, r := range res {
			cells = append(cells, f(r))
		}
		fmt.Fprintln(w, mdRow(cells))
	}
	header("per publish (publish phase)")
	perPub := func(r *modeResult, x float64) float64 { return x / float64(r.publishes) }
	nodeSum := func(key string) func(r *modeResult) float64 {
		return func(r *modeResult) float64 { return sum(r.nodes, key) }
	}
	f2 := func(get func(r *modeResult) float64) func(r *modeResult) string {
		return func(r *modeResult) string { return fmt.Sprintf("%.2f", perPub(r, get(r))) }
	}
	f0 := func(get func(r *modeResult) float64) func(r *modeResult) string {
		return func(r *modeResult) string { return fmt.Sprintf("%.0f", perPub(r, get(r))) }
	}
	gwSum := func(get func(g gwResult) float64) func(r *modeResult) float64 {
		return func(r *modeResult) float64 {
			t := 0.0
			for _, g := range r.gateways {
				t += get(g)
			}
			return t
		}
	}
	gwMean := func(get func(g gwResult) float64) func(r *modeResult) float64 {
		return func(r *modeResult) float64 { return gwSum(get)(r) / float64(len(r.gateways)) }
	}
	row("events received from Redis, per gateway", f2(gwMean(func(g gwResult) float64 { return g.received })))
	row("events received from Redis, all gateways", f2(gwSum(func(g gwResult) float64 { return g.received })))
	row("bytes read by a gateway (rchar)", f0(gwMean(func(g gwResult) float64 { return float64(g.readBytes) })))
	row("gateway CPU, all gateways (µs)", f0(gwSum(func(g gwResult) float64 { return g.cpu.Seconds() * 1e6 })))
	row("PUBLISH + SPUBLISH commands (with probes)", f2(func(r *modeResult) float64 {
		return sum(r.nodes, "cmdstat_publish.calls") + sum(r.nodes, "cmdstat_spublish.calls")
	}))
	row("store writes, EVALSHA (every receiving gateway stores)", f2(func(r *modeResult) float64 {
		return sum(r.nodes, "cmdstat_evalsha.calls") + sum(r.nodes, "cmdstat_eval.calls")
	}))
	row("Redis bytes sent to clients, all nodes", f0(func(r *modeResult) float64 {
		return sum(r.nodes, "total_net_output_bytes") - sum(r.nodes, "total_net_repl_output_bytes")
	}))
	row("Redis bytes received from clients, all nodes", f0(func(r *modeResult) float64 {
		return sum(r.nodes, "total_net_input_bytes") - sum(r.nodes, "total_net_repl_input_bytes")
	}))
	row("replication bytes, all nodes", f0(nodeSum("total_net_repl_output_bytes")))
	row("cluster bus messages sent, all nodes", f2(nodeSum("cluster_stats_messages_sent")))
	row("of which PUBLISH forwarded on the bus", f2(func(r *modeResult) float64 {
		return sum(r.nodes, "cluster_stats_messages_publish_sent") + sum(r.nodes, "cluster_stats_messages_publishshard_sent")
	}))
	row("cluster bus bytes sent, all nodes (wchar − INFO's bytes sent)", f0(busBytes))
	row("Redis CPU, all nodes (µs)", f0(func(r *modeResult) float64 {
		t := 0.0
		for _, n := range r.nodes {
			t += n.cpuSeconds()
		}
		return t * 1e6
	}))
	fmt.Fprintln(w)

	header("streams")
	row("delivery latency p50 / p99 / max (ms)", func(r *modeResult) string {
		return fmt.Sprintf("%.2f / %.2f / %.1f", r.latency.P50, r.latency.P99, r.latency.Max)
	})
	row("events delivered / expected", func(r *modeResult) string { return fmt.Sprintf("%d / %d", r.delivered, r.expected) })
	row("pub/sub connections to Redis per gateway", func(r *modeResult) string {
		return fmt.Sprintf("%.0f", gwMean(func(g gwResult) float64 { return g.conns })(r))
	})
	if cfg.churn > 0 {
		row(fmt.Sprintf("SSUBSCRIBE / SUNSUBSCRIBE: %d channels' streams reconnect at once", cfg.churn), func(r *modeResult) string {
			return fmt.Sprintf("%.0f / %.0f", r.churn.quickSub, r.churn.quickUnsub)
		})
		row(fmt.Sprintf("SSUBSCRIBE / SUNSUBSCRIBE: %d channels' streams close, come back after the linger", cfg.churn), func(r *modeResult) string {
			return fmt.Sprintf("%.0f / %.0f", r.churn.afterSub, r.churn.afterUnsub)
		})
		row("reopened streams: delivered / expected", func(r *modeResult) string {
			return fmt.Sprintf("%d / %d", r.churn.reopenedDelivered, r.churn.reopenedExpected)
		})
	}
	fmt.Fprintln(w)

	fmt.Fprintln(w, "Publish phase of each mode's first run, per gateway and per node:")
	fmt.Fprintln(w)
	whole := func(x float64) string { return fmt.Sprintf("%.0f", x) }
	firstRunsTable(w, res, []string{"mode", "gateway", "channels", "streams", "events received", "per publish", "CPU (ms)", "bytes read"},
		func(r *modeResult) [][]string {
			var rows [][]string
			for _, g := range r.gateways {
				rows = append(rows, []string{r.mode, g.name, strconv.Itoa(g.channels), strconv.Itoa(g.streams),
					whole(g.received), fmt.Sprintf("%.3f", g.received/float64(r.publishes)),
					whole(g.cpu.Seconds() * 1e3), strconv.FormatInt(g.readBytes, 10)})
			}
			return rows
		})
	fmt.Fprintln(w)
	firstRunsTable(w, res, []string{"mode", "node", "role", "commands", "bytes to clients", "replication bytes",
		"bus messages sent (bytes) / received", "bus PUBLISH received", "CPU (ms)"},
		func(r *modeResult) [][]string {
			var rows [][]string
			for i, n := range r.nodes {
				role := "replica"
				if n.master {
					role = "master"
				}
				rows = append(rows, []string{r.mode, "n" + strconv.Itoa(i), role,
					whole(n.v["total_commands_processed"]), whole(n.v["total_net_output_bytes"] - n.v["total_net_repl_output_bytes"]),
					whole(n.v["total_net_repl_output_bytes"]),
					fmt.Sprintf("%.0f (%.0f) / %.0f", n.v["cluster_stats_messages_sent"], n.v["proc_wchar"]-n.v["total_net_output_bytes"], n.v["cluster_stats_messages_received"]),
					whole(n.v["cluster_stats_messages_publish_received"] + n.v["cluster_stats_messages_publishshard_received"]), whole(n.cpuSeconds() * 1e3)})
			}
			return rows
		})
	for _, r := range res {
		fmt.Fprintf(w, "\n%s: publish phase %v (first publish to the last delivery, plus 1 s for the last store writes)", r.label, r.elapsed.Round(100*1e6))
	}
	fmt.Fprintln(w)
}

// firstRunsTable writes a markdown table of the first run of each mode (a repeat would
// only say the same again): the header columns, then the rows a run gives, one slice of
// cells a row.
func firstRunsTable(w io.Writer, res []*modeResult, columns []string, rows func(r *modeResult) [][]string) {
	writeHeader(w, columns)
	for _, r := range res {
		if !r.first {
			continue
		}
		for _, cells := range rows(r) {
			fmt.Fprintln(w, mdRow(cells))
		}
	}
}

// writeHeader writes a markdown table's header row and the separator under it.
func writeHeader(w io.Writer, columns []string) {
	fmt.Fprintln(w, mdRow(columns))
	fmt.Fprintln(w, "|"+strings.Repeat("---|", len(columns)))
}

// mdRow is one markdown table row.
func mdRow(cells []string) string { return "| " + strings.Join(cells, " | ") + " |" }

// busBytes is what the nodes wrote that INFO does not count as sent to clients or replicas:
// the cluster bus.
func busBytes(r *modeResult) float64 {
	return sum(r.nodes, "proc_wchar") - sum(r.nodes, "total_net_output_bytes")
}
