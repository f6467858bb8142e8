package stream

import (
	"testing"

	"github.com/sse-gateway/sse-gateway/internal/hub"
)

func pendingOfPoll(t testing.TB, st stream) []*hub.Message {
	t.Helper()
	ps, ok := st.(*pollStream)
	if !ok {
		t.Fatalf("stream %T is neither a loop nor a poll stream", st)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]*hub.Message(nil), ps.pending...)
}
