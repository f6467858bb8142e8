package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redistest"
)

// cluster is the private Redis Cluster on loopback ports that every mode runs on: the tests'
// (internal/redistest), with what a comparison asks of its nodes.
type cluster struct {
	*redistest.Cluster
}

// startCluster starts masters*(1+replicas) nodes in dir and joins them into one cluster with
// every slot served; the nodes are children of this process (childOfUs). On error the nodes
// started are stopped; otherwise the caller stops them.
func startCluster(ctx context.Context, dir string, masters, replicas int) (*cluster, error) {
	c, err := redistest.LaunchCluster(ctx, redistest.ClusterConfig{Dir: dir, Masters: masters, Replicas: replicas, Setup: childOfUs})
	if err != nil {
		return nil, err
	}
	return &cluster{c}, nil
}

// nodeClient is a plain client on node n alone; the caller closes it.
func nodeClient(n *redistest.Server) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: n.Addr(), DialTimeout: time.Second, ReadTimeout: 5 * time.Second, MaxRetries: -1})
}

// flush empties every master, so a mode starts with no stored event of the one before.
func (c *cluster) flush(ctx context.Context) error {
	for _, n := range c.Nodes {
		cl := nodeClient(n)
		role, err := cl.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] == "master" {
			err = cl.FlushAll(ctx).Err()
		}
		cl.Close()
		if err != nil {
			return fmt.Errorf("flushing %s: %w", n.Addr(), err)
		}
	}
	return nil
}
