"""shared.platform."""
