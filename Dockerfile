# syntax=docker/dockerfile:1
#
# sse-gateway container image.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" \
#                --build-arg REVISION="$(git rev-parse HEAD)" -t sse-gateway .
#
# Two stages: a Go toolchain builds one static binary; the final image is distroless
# "static" (CA certificates, tzdata, /etc/passwd, no shell, no package manager) running as
# UID 65532. deploy/dockerbuild_test.go parses this file and runs the builder's RUN steps
# verbatim (so keep them plain shell), then checks the binary is static and works.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
# TARGETOS/TARGETARCH are set by BuildKit for the platform being built (--platform);
# the defaults only matter for a builder that does not set them.
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
COPY cmd/ cmd/
COPY internal/ internal/
# Only the modules the binary imports: go list -deps follows its imports, and Go's pruned
# module graph needs no other module, so the test tooling go.mod also lists (chromedp,
# k8s.io, SSE clients) is never fetched. deploy/ checks this on a fresh module cache.
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download $(go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}' ./cmd/sse-gateway | sort -u)
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS="$TARGETOS" GOARCH="$TARGETARCH" \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o bin/sse-gateway ./cmd/sse-gateway

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sse-gateway" \
      org.opencontainers.image.description="Server-Sent Events fan-out gateway for feature-flag invalidations, fed by Redis pub/sub" \
      org.opencontainers.image.source="https://github.com/sse-gateway/sse-gateway" \
      org.opencontainers.image.url="https://github.com/sse-gateway/sse-gateway" \
      org.opencontainers.image.documentation="https://github.com/sse-gateway/sse-gateway/blob/main/docs/OPERATIONS.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /src/bin/sse-gateway /usr/local/bin/sse-gateway
# Streams + API on 8080, /metrics on its own listener on 9090 (kept off the public Service).
ENV SSE_GATEWAY_ADDR=":8080" \
    SSE_GATEWAY_METRICS_ADDR=":9090" \
    SSE_GATEWAY_LOG_FORMAT="json"
EXPOSE 8080 9090
# Numeric, so that Kubernetes' runAsNonRoot can verify it (a user name cannot be checked).
USER 65532:65532
# The binary is its own probe (the image has no shell or curl): exit 0 when /healthz answers 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sse-gateway", "healthcheck", "--addr", "127.0.0.1:8080"]
ENTRYPOINT ["/usr/local/bin/sse-gateway"]
CMD ["serve"]
