package redistest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

// NodeTimeout is the cluster-node-timeout of every test cluster: a master is declared failed,
// and its replica promoted, about two of these after it stops answering.
const NodeTimeout = 2 * time.Second

// Cluster is a private Redis Cluster on loopback: masters, each with its replicas, created
// with redis-cli --cluster create, every node killed when the test ends (StartCluster) or
// when the caller stops it (LaunchCluster).
type Cluster struct {
	t testing.TB // nil for a cluster of LaunchCluster
	// Nodes are every node, masters first as created; a node keeps its Server (and port)
	// across kills and restarts, whatever its role becomes.
	Nodes []*Server
}

// StartCluster starts masters*(1+replicas) cluster nodes, joins them into one cluster with
// every slot assigned and waits until every node reports it healthy. extra are more
// redis-server arguments for every node.
func StartCluster(t testing.TB, masters, replicas int, extra ...string) *Cluster {
	t.Helper()
	c, err := LaunchCluster(context.Background(), ClusterConfig{Dir: t.TempDir(), Masters: masters, Replicas: replicas, Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	c.t = t
	for _, n := range c.Nodes {
		n.t = t
		t.Cleanup(n.Kill)
	}
	return c
}

// ClusterConfig is the cluster LaunchCluster starts.
type ClusterConfig struct {
	// Dir holds one working directory per node: node0, node1, ... (created if need be).
	Dir string
	// Masters and Replicas (per master) make Masters*(1+Replicas) nodes.
	Masters, Replicas int
	// Extra are more redis-server arguments for every node.
	Extra []string
	// Setup, if not nil, is called on every node's redis-server command before it starts
	// (a command can have the kernel kill its nodes when it dies, however it dies).
	Setup func(*exec.Cmd)
}

// LaunchCluster is StartCluster for a caller that has no testing.TB, such as a command: it
// returns an error rather than failing a test (having stopped the nodes it started), and
// the caller stops the cluster (Stop). Its methods that fail a test (MasterOf, WaitHealthy,
// WaitFailover, Reshard, MoveSlot, and a node's Restart) are not for such a cluster.
func LaunchCluster(ctx context.Context, cfg ClusterConfig) (_ *Cluster, err error) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found in PATH: a cluster needs it (apt-get install redis-server, which ships redis-cli): %w", bin, err)
		}
	}
	c := &Cluster{}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	base := func(port int, dir string) []string {
		return []string{"--save", "", "--appendonly", "no",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.Itoa(int(NodeTimeout.Milliseconds())),
			// Replicas sync at once rather than after the default 5s batching delay: a
			// replica that never synced cannot be promoted.
			"--repl-diskless-sync-delay", "0"}
	}
	args := []string{"--cluster", "create"}
	for i := range cfg.Masters * (1 + cfg.Replicas) {
		s, err := launch(filepath.Join(cfg.Dir, "node"+strconv.Itoa(i)), base, freePortPair, cfg.Setup, cfg.Extra)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		args = append(args, s.Addr())
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(cfg.Replicas), "--cluster-yes")
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(cctx, "redis-cli", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("redis-cli %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	if err := c.waitHealthy(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return c, nil
}

// Stop kills every node and waits for it to exit.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// freePortPair picks a free port whose cluster bus port (port+10000) is free too.
func freePortPair() (int, error) {
	for range 1000 {
		p := 20000 + rand.IntN(25000)
		a, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		b, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return p, nil
	}
	return 0, errors.New("found no free port pair (p, p+10000) for a cluster node")
}

// Addrs are every node's host:port.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// URL is the cluster as the gateway's --redis-url takes it: the first node as the host and
// every other one as an addr= parameter.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	u := "redis://" + addrs[0]
	for i, a := range addrs[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + a
	}
	return u
}

// Node returns the node listening on addr, or nil.
func (c *Cluster) Node(addr string) *Server {
	for _, n := range c.Nodes {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// Client returns a cluster client on every node, closed when the test ends (the caller
// closes it on a cluster of LaunchCluster).
func (c *Cluster) Client() *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	if c.t != nil {
		c.t.Cleanup(func() { _ = cl.Close() })
	}
	return cl
}

// NodeView is what one node says of another in CLUSTER NODES.
type NodeView struct {
	ID, Addr string
	Master   bool
	Failed   bool // fail or pfail
	Slots    [][2]int
}

// Topology is CLUSTER NODES as seen by the first running node that answers.
func (c *Cluster) Topology() ([]NodeView, error) {
	var lastErr error
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		v, err := nodesOf(n.Addr())
		if err == nil {
			return v, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no node answered CLUSTER NODES: %v", lastErr)
}

func nodesOf(addr string) ([]NodeView, error) {
	cl := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := cl.ClusterNodes(ctx).Result()
	if err != nil {
		return nil, err
	}
	var out []NodeView
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		v := NodeView{ID: f[0], Addr: addr, Master: strings.Contains(f[2], "master"),
			Failed: strings.Contains(f[2], "fail")}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				v.Slots = append(v.Slots, [2]int{a, b})
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// MasterOf returns the node that the cluster says serves slot now.
func (c *Cluster) MasterOf(slot int) *Server {
	c.t.Helper()
	nodes, err := c.Topology()
	if err != nil {
		c.t.Fatalf("cluster topology: %v", err)
	}
	for _, v := range nodes {
		if !v.Master || v.Failed {
			continue
		}
		for _, r := range v.Slots {
			if slot >= r[0] && slot <= r[1] {
				if n := c.Node(v.Addr); n != nil {
					return n
				}
			}
		}
	}
	c.t.Fatalf("no live master serves slot %d: %+v", slot, nodes)
	return nil
}

// Slot is the cluster hash slot of key (its {hash tag} if it has one).
func Slot(key string) int { return redisconn.Slot(key) }

// WaitHealthy waits until every running node reports cluster_state:ok, knows every running
// node, and sees every slot served by a master that is not failed.
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	if err := c.waitHealthy(context.Background(), timeout); err != nil {
		c.t.Fatal(err)
	}
}

// waitHealthy is WaitHealthy's core: it says why the cluster is not healthy by the timeout
// (or when ctx ends).
func (c *Cluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		why := c.unhealthy(ctx)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cluster not healthy after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unhealthy says why the cluster is not healthy, or "" when it is.
func (c *Cluster) unhealthy(ctx context.Context) string {
	running := 0
	for _, n := range c.Nodes {
		if n.Running() {
			running++
		}
	}
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		cl := redis.NewClient(&redis.Options{Addr: n.Addr(), DialTimeout: time.Second, ReadTimeout: time.Second, MaxRetries: -1})
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cl.ClusterInfo(qctx).Result()
		repl, rerr := cl.Info(qctx, "replication").Result()
		cancel()
		cl.Close()
		if err == nil {
			err = rerr
		}
		if err != nil {
			return fmt.Sprintf("%s: CLUSTER INFO: %v", n.Addr(), err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return n.Addr() + ": cluster_state is not ok"
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			// Until it has synced, a replica could not take over from its master.
			return n.Addr() + ": replica not in sync with its master"
		}
		views, err := nodesOf(n.Addr())
		if err != nil {
			return fmt.Sprintf("%s: CLUSTER NODES: %v", n.Addr(), err)
		}
		healthy, covered := 0, 0
		for _, v := range views {
			if !v.Failed && c.Node(v.Addr) != nil && c.Node(v.Addr).Running() {
				healthy++
			}
			if v.Master && !v.Failed {
				for _, r := range v.Slots {
					covered += r[1] - r[0] + 1
				}
			}
		}
		if healthy != running {
			return fmt.Sprintf("%s sees %d healthy nodes of %d running", n.Addr(), healthy, running)
		}
		if covered != 16384 {
			return fmt.Sprintf("%s sees %d of 16384 slots served", n.Addr(), covered)
		}
	}
	return ""
}

// WaitFailover waits until the cluster has promoted a replica for every slot old served
// (old was killed), and is healthy again.
func (c *Cluster) WaitFailover(old *Server, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		nodes, err := c.Topology()
		if err == nil {
			promoted := true
			for _, v := range nodes {
				if v.Addr == old.Addr() && v.Master && len(v.Slots) > 0 {
					promoted = false
				}
			}
			if promoted && c.unhealthy(context.Background()) == "" {
				return
			}
		}
		if time.Now().After(deadline) {
			var logs strings.Builder
			for _, n := range c.Nodes {
				b, _ := os.ReadFile(filepath.Join(n.Dir(), "redis.log"))
				fmt.Fprintf(&logs, "--- %s:\n%s\n", n.Addr(), tail(string(b), 1500))
			}
			c.t.Fatalf("no failover of %s within %v (%v; %s)\n%s", old.Addr(), timeout, err, c.unhealthy(context.Background()), logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Reshard moves every slot of the master from (with its keys) to the master to, with
// redis-cli --cluster reshard, as an operator rebalancing a cluster does; clients see ASK
// and MOVED redirections meanwhile.
func (c *Cluster) Reshard(from, to *Server) {
	c.t.Helper()
	nodes, err := c.Topology()
	if err != nil {
		c.t.Fatalf("cluster topology: %v", err)
	}
	var fromID, toID string
	slots := 0
	for _, v := range nodes {
		switch v.Addr {
		case from.Addr():
			fromID = v.ID
			for _, r := range v.Slots {
				slots += r[1] - r[0] + 1
			}
		case to.Addr():
			toID = v.ID
		}
	}
	if fromID == "" || toID == "" || slots == 0 {
		c.t.Fatalf("reshard %s -> %s: not two masters with slots: %+v", from.Addr(), to.Addr(), nodes)
	}
	args := []string{"--cluster", "reshard", to.Addr(), "--cluster-from", fromID, "--cluster-to", toID,
		"--cluster-slots", strconv.Itoa(slots), "--cluster-yes"}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		c.t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, tail(string(out), 2000))
	}
	c.WaitHealthy(30 * time.Second)
}

// MoveSlot moves one slot, with its keys, from its master to the master to, the way
// redis-cli --cluster reshard moves each slot: IMPORTING on the target, MIGRATING on the
// source, MIGRATE of its keys, then SETSLOT NODE on every master.
func (c *Cluster) MoveSlot(slot int, to *Server) {
	c.t.Helper()
	from := c.MasterOf(slot)
	if from == to {
		c.t.Fatalf("slot %d is on %s already", slot, to.Addr())
	}
	nodes, err := c.Topology()
	if err != nil {
		c.t.Fatalf("cluster topology: %v", err)
	}
	id := map[string]string{}
	for _, v := range nodes {
		id[v.Addr] = v.ID
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := func(s *Server) *redis.Client {
		cl := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
		c.t.Cleanup(func() { _ = cl.Close() })
		return cl
	}
	src, dst := client(from), client(to)
	must := func(what string, err error) {
		if err != nil {
			c.t.Fatalf("moving slot %d from %s to %s: %s: %v", slot, from.Addr(), to.Addr(), what, err)
		}
	}
	must("IMPORTING", dst.Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", id[from.Addr()]).Err())
	must("MIGRATING", src.Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", id[to.Addr()]).Err())
	host, port, _ := net.SplitHostPort(to.Addr())
	for {
		keys, err := src.ClusterGetKeysInSlot(ctx, slot, 100).Result()
		must("GETKEYSINSLOT", err)
		if len(keys) == 0 {
			break
		}
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must("MIGRATE", src.Do(ctx, args...).Err())
	}
	for _, v := range nodes {
		n := c.Node(v.Addr)
		if !v.Master || v.Failed || n == nil || !n.Running() {
			continue
		}
		must("SETSLOT NODE on "+v.Addr, client(n).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", id[to.Addr()]).Err())
	}
	c.WaitHealthy(30 * time.Second)
}
