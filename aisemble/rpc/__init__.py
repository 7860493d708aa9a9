"""gRPC plumbing every process shares: server, interceptors, status mapping, client toolkit, telemetry, metrics."""
