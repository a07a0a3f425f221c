"""batchgw's benchmarks: `make bench` (python -m bench) runs them all and writes bench/results.md."""
