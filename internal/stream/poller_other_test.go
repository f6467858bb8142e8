//go:build !linux

package stream

import (
	"fmt"
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

func pendingOfPoll(t testing.TB, st stream) []*hub.Message {
	t.Helper()
	t.Fatalf("stream %T: streams are only taken over on Linux", st)
	return nil
}

func pollerEntries(*Server) int { return 0 }

func registryReport(s *Server) string { return fmt.Sprintf("%d entries", s.OpenStreams()) }
