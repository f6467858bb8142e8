package main

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
	"time"

	"github.com/redis/go-redis/v9"
)

// cluster is a private Redis Cluster on loopback ports, started from redis-server and
// redis-cli --cluster create like internal/redistest's (which needs a testing.TB, so a
// command cannot use it).
type cluster struct {
	nodes []*node
}

// node is one redis-server of the cluster.
type node struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// startCluster starts masters*(1+replicas) nodes in dir and joins them into one cluster with
// every slot served; on error the nodes started are stopped.
func startCluster(ctx context.Context, dir string, masters, replicas int) (_ *cluster, err error) {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found in PATH (apt-get install redis-server ships both): %w", bin, err)
		}
	}
	c := &cluster{}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	args := []string{"--cluster", "create"}
	for i := range masters * (1 + replicas) {
		n, err := startNode(ctx, filepath.Join(dir, "node"+strconv.Itoa(i)))
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
		args = append(args, n.addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
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

// startNode starts one cluster-enabled redis-server on a free port pair (the port and its
// cluster bus port, port+10000), retrying when another process took the port meanwhile.
func startNode(ctx context.Context, dir string) (*node, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		port, err := freePortPair()
		if err != nil {
			return nil, err
		}
		n := &node{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), done: make(chan struct{})}
		n.cmd = exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--logfile", "redis.log",
			"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--repl-diskless-sync-delay", "0")
		childOfUs(n.cmd)
		if err := n.cmd.Start(); err != nil {
			return nil, fmt.Errorf("starting redis-server: %w", err)
		}
		go func() { _ = n.cmd.Wait(); close(n.done) }()
		if lastErr = n.waitUp(ctx, 5*time.Second); lastErr == nil {
			return n, nil
		}
		n.stop()
	}
	return nil, fmt.Errorf("starting redis-server in %s: %w (its log: %s)", dir, lastErr, filepath.Join(dir, "redis.log"))
}

// waitUp waits until the node answers PING.
func (n *node) waitUp(ctx context.Context, within time.Duration) error {
	cl := n.client()
	defer cl.Close()
	deadline := time.Now().Add(within)
	for {
		select {
		case <-n.done:
			return errors.New("redis-server exited")
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := cl.Ping(pctx).Err()
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is a plain client on the node alone; the caller closes it.
func (n *node) client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.addr, DialTimeout: time.Second, ReadTimeout: 5 * time.Second, MaxRetries: -1})
}

func (n *node) stop() {
	if n.cmd.Process != nil {
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// stop kills every node.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		n.stop()
	}
}

// url is the cluster as --redis-url takes it: one node as host, the others as addr=.
func (c *cluster) url() string {
	u := "redis://" + c.nodes[0].addr
	for i, n := range c.nodes[1:] {
		sep := "&"
		if i == 0 {
			sep = "?"
		}
		u += sep + "addr=" + n.addr
	}
	return u
}

func (c *cluster) addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = n.addr
	}
	return out
}

// waitHealthy waits until every node says cluster_state:ok with every slot served and every
// node known, and every replica is in sync with its master.
func (c *cluster) waitHealthy(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		why := c.unhealthy(ctx)
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("cluster not healthy after %v: %s", within, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *cluster) unhealthy(ctx context.Context) string {
	for _, n := range c.nodes {
		cl := n.client()
		qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := cl.ClusterInfo(qctx).Result()
		repl, rerr := cl.Info(qctx, "replication").Result()
		cancel()
		cl.Close()
		if err == nil {
			err = rerr
		}
		switch {
		case err != nil:
			return fmt.Sprintf("%s: %v", n.addr, err)
		case !strings.Contains(info, "cluster_state:ok"):
			return n.addr + ": cluster_state is not ok"
		case !strings.Contains(info, "cluster_slots_ok:16384"):
			return n.addr + ": not every slot is served"
		case !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.nodes))+"\r"):
			return n.addr + ": does not know every node yet"
		case strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up"):
			return n.addr + ": replica not in sync"
		}
	}
	return ""
}

// flush empties every master, so a mode starts with no stored event of the one before.
func (c *cluster) flush(ctx context.Context) error {
	for _, n := range c.nodes {
		cl := n.client()
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			err = cl.FlushAll(ctx).Err()
		}
		cl.Close()
		if err != nil {
			return fmt.Errorf("flushing %s: %w", n.addr, err)
		}
	}
	return nil
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
