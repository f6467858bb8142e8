// Package e2e is the end-to-end suite: it builds the real sse-gateway binary, starts a private
// redis-server and a stand-in for DevCycle's config CDN, and drives real clients against them:
// @devcycle/nodejs-server-sdk and @devcycle/js-client-sdk under Node, headless Chromium's native
// EventSource, and the Go SSE clients github.com/r3labs/sse/v2 and github.com/launchdarkly/eventsource.
//
// Everything lives in _test.go files; `go test ./e2e` runs it. Run scripts/e2e-deps first: it
// installs redis-server, chromium and the pinned node packages when they are missing. A test whose
// dependency is missing fails with a message naming it; it never skips.
//
// E2E_GATEWAY_BIN=/path/to/binary runs the suite against a prebuilt gateway instead of building one.
package e2e
