"""Monitoring: the metrics that each pipeline step pushes to the Prometheus Pushgateway."""
