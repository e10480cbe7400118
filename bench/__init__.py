"""Benchmarks against a real TimescaleDB and the production server command. See bench/README.md."""
