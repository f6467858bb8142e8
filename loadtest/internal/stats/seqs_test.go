package stats

import (
	"reflect"
	"sync"
	"testing"
)

func TestSeqs(t *testing.T) {
	s := NewSeqs(3)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 100 {
				s.Record(2, int64(g*100+i))
			}
		})
	}
	wg.Wait()
	s.Record(1, 5)
	s.Record(0, 7) // not a publish
	s.Record(4, 7) // beyond maxSeq
	want := []SeqCount{{Seq: 1, Count: 1, MaxNs: 5}, {Seq: 2, Count: 800, MaxNs: 799}}
	if got := s.Snapshot(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Snapshot = %+v, want %+v", got, want)
	}
	if s.Covers(0) || !s.Covers(3) || s.Covers(4) {
		t.Fatal("Covers: want 1..3")
	}
}
