.PHONY: bench record

# Gateway vs baseline at N=15000 on this machine; writes docs/PERFORMANCE.md (see scripts/bench).
bench:
	./scripts/bench

# Re-record the measured figures of docs/ and the README at HEAD (docs/figures_test.go says
# how): every figure, or FIGURE=<name>. Not in CI; commit the pages it rewrites.
record:
	cd docs && go test -count=1 -timeout 0 -v -run '^$$' . -args -record $(if $(FIGURE),-figure $(FIGURE))
