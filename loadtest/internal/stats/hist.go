// Package stats holds the load generator's latency statistics: a mergeable
// log-linear histogram (bounded memory whatever the sample count), exact
// quantiles for short lists, and per-publish delivery counts (Seqs).
package stats

import (
	"math"
	"math/bits"
	"slices"
)

// subBits sets the precision: 2^subBits sub-buckets per power of two, so a
// bucket's width is at most 1/64 (1.6%) of its lower bound.
const (
	subBits    = 6
	subCount   = 1 << subBits
	numBuckets = (64 - subBits + 1) * subCount
)

// Hist is a histogram of non-negative int64 values (the generator records
// nanoseconds). The zero value is empty and ready. Not safe for concurrent use;
// shard it and Merge.
type Hist struct {
	counts [numBuckets]uint64
	n      uint64
	sum    float64
	min    int64
	max    int64
}

// bucketOf maps v >= 0 to its bucket index.
func bucketOf(v int64) int {
	if v < subCount {
		return int(v)
	}
	u := uint64(v)
	shift := bits.Len64(u) - subBits - 1 // keeps the top subBits+1 bits: u>>shift in [64,128)
	return (shift+1)*subCount + int(u>>uint(shift)) - subCount
}

// bucketBounds returns the smallest and largest value that land in bucket i.
func bucketBounds(i int) (lo, hi int64) {
	if i < subCount {
		return int64(i), int64(i)
	}
	shift := i/subCount - 1
	m := uint64(i%subCount + subCount)
	lo = int64(m << uint(shift))
	hi = int64((m+1)<<uint(shift)) - 1
	return lo, hi
}

// Record adds one value; negative values count as 0.
func (h *Hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
	h.counts[bucketOf(v)]++
}

// Merge adds o's samples to h.
func (h *Hist) Merge(o *Hist) {
	if o.n == 0 {
		return
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
	h.sum += o.sum
	for i, c := range o.counts {
		h.counts[i] += c
	}
}

// Count reports the number of recorded values.
func (h *Hist) Count() uint64 { return h.n }

// Max reports the exact largest value (0 when empty).
func (h *Hist) Max() int64 { return h.max }

// Min reports the exact smallest value (0 when empty).
func (h *Hist) Min() int64 { return h.min }

// Mean reports the exact mean (0 when empty).
func (h *Hist) Mean() float64 {
	if h.n == 0 {
		return 0
	}
	return h.sum / float64(h.n)
}

// Quantile returns the nearest-rank q-quantile (0 < q <= 1): the midpoint of
// the bucket holding the ceil(q*n)-th smallest value, clamped to [Min, Max].
// Its relative error is below 1/128. It returns 0 when empty.
func (h *Hist) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	if rank < 1 {
		rank = 1
	}
	if rank >= h.n {
		return h.max
	}
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := bucketBounds(i)
			v := lo + (hi-lo)/2
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}

// Bucket is one non-empty bucket in a Snapshot: values in [Lo, Hi], Count of them.
type Bucket struct {
	Lo    int64  `json:"lo"`
	Hi    int64  `json:"hi"`
	Count uint64 `json:"n"`
}

// Snapshot is the JSON form of a Hist, exchanged between processes and kept in
// results for plotting. FromSnapshot(h.Snapshot()) equals h.
type Snapshot struct {
	Count   uint64   `json:"count"`
	Sum     float64  `json:"sum"`
	Min     int64    `json:"min"`
	Max     int64    `json:"max"`
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Snapshot returns the non-empty buckets of h.
func (h *Hist) Snapshot() Snapshot {
	s := Snapshot{Count: h.n, Sum: h.sum, Min: h.min, Max: h.max}
	for i, c := range h.counts {
		if c > 0 {
			lo, hi := bucketBounds(i)
			s.Buckets = append(s.Buckets, Bucket{Lo: lo, Hi: hi, Count: c})
		}
	}
	return s
}

// FromSnapshot rebuilds a Hist from its Snapshot.
func FromSnapshot(s Snapshot) *Hist {
	h := &Hist{n: s.Count, sum: s.Sum, min: s.Min, max: s.Max}
	for _, b := range s.Buckets {
		h.counts[bucketOf(b.Lo)] += b.Count
	}
	return h
}

// Quantiles is the usual summary of a distribution, in milliseconds.
type Quantiles struct {
	N    uint64  `json:"n"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

// Summary returns h's quantiles, converting nanoseconds to milliseconds.
func (h *Hist) Summary() Quantiles {
	ms := func(ns int64) float64 { return float64(ns) / 1e6 }
	return Quantiles{
		N: h.n, P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.max), Mean: h.Mean() / 1e6,
	}
}

// ExactQuantile returns the nearest-rank q-quantile of vals (which it sorts in
// place), or 0 for an empty slice.
func ExactQuantile(vals []int64, q float64) int64 {
	if len(vals) == 0 {
		return 0
	}
	slices.Sort(vals)
	rank := int(math.Ceil(q * float64(len(vals))))
	rank = min(max(rank, 1), len(vals))
	return vals[rank-1]
}

// Median returns the median of vals without modifying it (the mean of the two
// middle values for an even count), or 0 for an empty slice.
func Median(vals []float64) float64 {
	if len(vals) == 0 {
		return 0
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
