package stats

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

func TestBucketsCoverAndOrder(t *testing.T) {
	vals := []int64{0, 1, 63, 64, 65, 127, 128, 129, 1000, 1 << 20, 123456789, 1<<40 + 12345, math.MaxInt64}
	prevIdx := -1
	for _, v := range vals {
		i := bucketOf(v)
		if i < prevIdx || i >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d out of order/range", v, i)
		}
		prevIdx = i
		lo, hi := bucketBounds(i)
		if v < lo || v > hi {
			t.Fatalf("value %d outside its bucket %d [%d,%d]", v, i, lo, hi)
		}
		if lo >= subCount && float64(hi-lo+1)/float64(lo) > 1.0/subCount+1e-12 {
			t.Fatalf("bucket %d [%d,%d] wider than 1/%d", i, lo, hi, subCount)
		}
	}
	// Adjacent buckets tile the number line.
	for i := 1; i < 40*subCount; i++ {
		_, hiPrev := bucketBounds(i - 1)
		lo, _ := bucketBounds(i)
		if lo != hiPrev+1 {
			t.Fatalf("gap between bucket %d and %d: %d, %d", i-1, i, hiPrev, lo)
		}
	}
}

func TestQuantileAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Hist
	exact := make([]int64, 0, 100000)
	for range 100000 {
		v := int64(r.ExpFloat64() * 5e6) // ~5 ms mean, in ns
		h.Record(v)
		exact = append(exact, v)
	}
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		want := ExactQuantile(exact, q)
		got := h.Quantile(q)
		if want > 100 && math.Abs(float64(got-want))/float64(want) > 1.0/64 {
			t.Errorf("q%.3f = %d, exact %d", q, got, want)
		}
	}
	if h.Quantile(1) != h.Max() || h.Count() != 100000 {
		t.Fatalf("max/count wrong")
	}
}

func TestQuantileSmall(t *testing.T) {
	var h Hist
	if h.Quantile(0.5) != 0 || h.Summary().N != 0 {
		t.Fatal("empty hist not zero")
	}
	for _, v := range []int64{10, 20, 30, 40} {
		h.Record(v)
	}
	// Values below 64 have exact buckets: nearest rank.
	if got := h.Quantile(0.5); got != 20 {
		t.Fatalf("p50 = %d", got)
	}
	if got := h.Quantile(0.75); got != 30 {
		t.Fatalf("p75 = %d", got)
	}
	if got := h.Quantile(0.99); got != 40 {
		t.Fatalf("p99 = %d", got)
	}
	if h.Min() != 10 || h.Mean() != 25 {
		t.Fatalf("min %d mean %v", h.Min(), h.Mean())
	}
	h.Record(-5)
	if h.Min() != 0 {
		t.Fatalf("negative not clamped")
	}
}

func TestMergeAndSnapshot(t *testing.T) {
	var a, b, all Hist
	for i := range int64(5000) {
		v := i * i * 37
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	if a != all {
		t.Fatal("merge differs from recording everything in one")
	}
	raw, err := json.Marshal(a.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var s Snapshot
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if got := FromSnapshot(s); *got != all {
		t.Fatal("snapshot round trip differs")
	}
	var empty Hist
	a.Merge(&empty)
	if a != all {
		t.Fatal("merging empty changed the histogram")
	}
}

func TestExactQuantileAndMedian(t *testing.T) {
	if ExactQuantile(nil, 0.5) != 0 || Median(nil) != 0 {
		t.Fatal("empty")
	}
	v := []int64{5, 1, 4, 2, 3}
	if ExactQuantile(v, 0.5) != 3 || ExactQuantile(v, 0.99) != 5 || ExactQuantile(v, 0.01) != 1 {
		t.Fatal("exact quantiles wrong")
	}
	f := []float64{3, 1, 2}
	if Median(f) != 2 || f[0] != 3 {
		t.Fatal("median wrong or input modified")
	}
	if Median([]float64{4, 1, 2, 3}) != 2.5 {
		t.Fatal("even median")
	}
}
