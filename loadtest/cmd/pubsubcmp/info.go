package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/sse-gateway/sse-gateway/loadtest/internal/procstat"
)

// nodeStats is one node's counters at one moment: INFO stats, cpu, commandstats and
// replication, and CLUSTER INFO, as name -> value ("cmdstat_publish.calls" for a
// commandstats field).
type nodeStats struct {
	addr   string
	master bool
	v      map[string]float64
}

// snapshot reads every node's counters.
func (c *cluster) snapshot(ctx context.Context) ([]nodeStats, error) {
	out := make([]nodeStats, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		cl := nodeClient(n)
		info, err := cl.Info(ctx, "stats", "cpu", "commandstats", "replication").Result()
		var ci string
		if err == nil {
			ci, err = cl.ClusterInfo(ctx).Result()
		}
		cl.Close()
		if err != nil {
			return nil, fmt.Errorf("INFO of %s: %w", n.Addr(), err)
		}
		s := nodeStats{addr: n.Addr(), v: map[string]float64{}}
		parseInfo(info+"\n"+ci, s.v)
		// Redis 7.0 counts no cluster bus bytes; what the process wrote to every socket and
		// file, less what INFO says it sent to clients and replicas, is the bus (and a few
		// log lines).
		io, err := procstat.ReadIO(n.PID())
		if err != nil {
			return nil, err
		}
		s.v["proc_wchar"] = float64(io.WChar)
		s.master = strings.Contains(info, "role:master")
		out = append(out, s)
	}
	return out, nil
}

// parseInfo reads INFO's "key:value" lines into v; commandstats lines
// ("cmdstat_x:calls=1,usec=2,...") become "cmdstat_x.calls" and so on.
func parseInfo(text string, v map[string]float64) {
	for _, line := range strings.Split(text, "\n") {
		k, val, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if strings.HasPrefix(k, "cmdstat_") {
			for _, kv := range strings.Split(val, ",") {
				f, fv, ok := strings.Cut(kv, "=")
				if x, err := strconv.ParseFloat(fv, 64); ok && err == nil {
					v[k+"."+f] = x
				}
			}
			continue
		}
		if x, err := strconv.ParseFloat(val, 64); err == nil {
			v[k] = x
		}
	}
}

// delta is after - before, node by node (the same nodes, in the same order); a node's role
// is the one after.
func delta(before, after []nodeStats) []nodeStats {
	out := make([]nodeStats, len(after))
	for i, a := range after {
		d := nodeStats{addr: a.addr, master: a.master, v: map[string]float64{}}
		for k, x := range a.v {
			d.v[k] = x - before[i].v[k]
		}
		out[i] = d
	}
	return out
}

// sum adds key over nodes.
func sum(nodes []nodeStats, key string) float64 {
	t := 0.0
	for _, n := range nodes {
		t += n.v[key]
	}
	return t
}

// cpuSeconds is a node's used CPU (user + system, main thread and children).
func (s nodeStats) cpuSeconds() float64 {
	return s.v["used_cpu_user"] + s.v["used_cpu_sys"] + s.v["used_cpu_user_children"] + s.v["used_cpu_sys_children"]
}
