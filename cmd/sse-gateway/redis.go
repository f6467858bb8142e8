package main

import (
	"fmt"
	"net/url"

	"github.com/redis/go-redis/v9"
)

// newRedisClient builds the client for a --redis-url. A URL that lists more nodes with
// addr= parameters (redis://h1:6379?addr=h2:6379&addr=h3:6379) is a Redis Cluster: classic
// pub/sub is cluster-wide and every key the gateway uses is a single-key command, so the same
// code runs on both.
func newRedisClient(raw string) (redis.UniversalClient, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	if u.Query().Has("addr") {
		opts, err := redis.ParseClusterURL(raw)
		if err != nil {
			return nil, fmt.Errorf("--redis-url (cluster): %w", err)
		}
		return redis.NewClusterClient(opts), nil
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("--redis-url: %w", err)
	}
	return redis.NewClient(opts), nil
}
