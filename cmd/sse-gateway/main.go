// Command sse-gateway is a realtime notification gateway: it holds Server-Sent Events streams
// of feature-flag SDKs and tells them, in the wire format DevCycle SDKs parse, when their
// configuration changed, fed by Redis pub/sub (or an embedded broker for one instance).
//
// Usage:
//
//	sse-gateway [serve] [flags]     run the gateway
//	sse-gateway publish [flags]     publish a config change
//	sse-gateway healthcheck [flags] exit 0 when a gateway's /healthz answers 200
//	sse-gateway keys add|revoke|list manage the keys kept in Redis (--keys-redis)
//	sse-gateway flags [--markdown]  list every serve flag and its environment variable
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(args)
	case "publish":
		return runPublish(args)
	case "healthcheck":
		return runHealthcheck(args)
	case "keys":
		return runKeys(args, os.Stdout, os.Stderr)
	case "flags":
		writeFlagTable(os.Stdout)
		return 0
	case "version":
		fmt.Println(version)
		return 0
	case "help":
		return runServe([]string{"--help"})
	default:
		fmt.Fprintf(os.Stderr, "sse-gateway: unknown command %q (serve, publish, healthcheck, keys, flags, version)\n", cmd)
		return 2
	}
}
