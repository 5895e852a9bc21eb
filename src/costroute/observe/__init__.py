"""Observing the router: one record per request, written as a log line, CloudWatch EMF and Prometheus metrics."""
