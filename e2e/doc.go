// Package e2e is the end-to-end suite: it builds the real sse-gateway binary, starts a private
// redis-server and a stand-in for DevCycle's config CDN, and drives real clients against them:
// @devcycle/nodejs-server-sdk and @devcycle/js-client-sdk under Node, devcycle-python-server-sdk
// under CPython, com.devcycle:java-server-sdk on the JVM, headless Chromium's native EventSource,
// and the Go SSE clients github.com/r3labs/sse/v2 and github.com/launchdarkly/eventsource.
//
// Everything Go lives in _test.go files; `go test ./e2e` runs it. Run scripts/e2e-deps and
// scripts/sdk-deps first: they install redis-server, chromium, the pinned node packages, and the
// pinned Python (a venv) and Java (Maven) SDKs when they are missing. A test whose dependency is
// missing fails with a message naming the installer; it never skips.
//
// E2E_GATEWAY_BIN=/path/to/binary runs the suite against a prebuilt gateway instead of building one.
package e2e
