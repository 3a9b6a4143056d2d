"""Benchmarks: scripts that measure side by side in one run and write BENCHMARKS.md sections."""
