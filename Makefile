.PHONY: bench

# Gateway vs baseline at N=15000 on this machine; writes docs/PERFORMANCE.md (see scripts/bench).
bench:
	./scripts/bench
