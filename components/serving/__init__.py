"""The HTTP service and batch scoring: endpoints, micro-batching, hot reload, shadow, metrics."""
