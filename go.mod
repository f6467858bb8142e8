module github.com/sse-gateway/sse-gateway

go 1.26

require (
	github.com/gorilla/mux v1.8.1
	github.com/launchdarkly/eventsource v1.11.0
	github.com/prometheus/client_golang v1.25.0
	github.com/r3labs/sse/v2 v2.10.0
	github.com/redis/go-redis/v9 v9.23.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
	golang.org/x/sync v0.25.0
	golang.org/x/sys v0.50.0
	golang.org/x/time v0.16.0
)
