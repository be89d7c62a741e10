"""shared.contracts."""
