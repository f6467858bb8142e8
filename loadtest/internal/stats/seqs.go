package stats

import "sync/atomic"

// SeqCount is one publish as one worker saw it: how many of its streams received it, and
// the slowest of those deliveries. It is exchanged between processes as JSON.
type SeqCount struct {
	Seq   int64 `json:"s"`
	Count int64 `json:"n"`
	MaxNs int64 `json:"max"`
}

// Seqs counts, per publish sequence number, the deliveries and the slowest one: what a
// coordinator needs to tell when a publish reached its last stream. Safe for concurrent
// use: every stream goroutine of a worker records into the same Seqs.
type Seqs struct {
	s []seqStat // index = sequence number; 0 is never a publish
}

type seqStat struct {
	count atomic.Int64
	maxNs atomic.Int64
}

// NewSeqs counts sequence numbers 1..maxSeq.
func NewSeqs(maxSeq int64) *Seqs {
	return &Seqs{s: make([]seqStat, maxSeq+1)}
}

// Covers reports whether seq is one of the sequence numbers s counts.
func (s *Seqs) Covers(seq int64) bool { return seq > 0 && seq < int64(len(s.s)) }

// Record counts one delivery of seq that took latNs; a seq s does not cover is ignored.
func (s *Seqs) Record(seq, latNs int64) {
	if !s.Covers(seq) {
		return
	}
	st := &s.s[seq]
	st.count.Add(1)
	for {
		cur := st.maxNs.Load()
		if latNs <= cur || st.maxNs.CompareAndSwap(cur, latNs) {
			return
		}
	}
}

// Snapshot returns the delivered publishes (count > 0), by ascending sequence number.
func (s *Seqs) Snapshot() []SeqCount {
	var out []SeqCount
	for i := range s.s {
		if n := s.s[i].count.Load(); n > 0 {
			out = append(out, SeqCount{Seq: int64(i), Count: n, MaxNs: s.s[i].maxNs.Load()})
		}
	}
	return out
}
