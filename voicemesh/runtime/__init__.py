"""Plumbing every part shares: HTTP serving and problems, UDP sockets, structured logs, config, telemetry."""
