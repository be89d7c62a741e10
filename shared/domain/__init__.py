"""shared.domain."""
