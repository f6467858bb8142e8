package main

import (
	"github.com/redis/go-redis/v9"

	"github.com/sse-gateway/sse-gateway/internal/gateway"
	"github.com/sse-gateway/sse-gateway/internal/redisconn"
)

// newRedisClient builds the client of a subcommand for a --redis-url in any of the forms
// redisconn takes (standalone, Redis Cluster, Sentinel), with the password of
// --redis-password-file when passwordFile is set, named name on the server.
func newRedisClient(raw, passwordFile, name string) (redis.UniversalClient, error) {
	o, err := gateway.RedisOptions(raw, passwordFile)
	if err != nil {
		return nil, err
	}
	return redisconn.Open(o, name), nil
}
