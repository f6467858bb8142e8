// Package deploy holds no code: its tests check the deployment files around the gateway.
//
// They parse the repository's Dockerfile and run its builder's RUN steps verbatim on a
// copy of the build context filtered through .dockerignore, then check the binary that
// comes out (static, stripped, trimmed, working healthcheck subcommand); decode every
// Kubernetes manifest under kubernetes/ strictly against the Kubernetes API types and
// check the invariants between them; run promtool over prometheus/ (syntax and the alert
// unit tests); and check that every metric the Grafana dashboard and the alert rules
// refer to is one the gateway actually exports, read from a running gateway's /metrics.
//
// Run with `go test -race ./deploy/...`; the optional tools come from scripts/ops-deps.
package deploy
