"""Live traffic against the champion's data: drift, Prometheus gauges, the labelling queue."""
