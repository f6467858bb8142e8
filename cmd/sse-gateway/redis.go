package main

import (
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

// newRedisClient builds the client of a subcommand for a --redis-url in any of the forms
// redisconn takes (standalone, Redis Cluster, Sentinel), named name on the server.
func newRedisClient(raw, name string) (redis.UniversalClient, error) {
	o, err := redisconn.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	return redisconn.Open(o, name), nil
}
