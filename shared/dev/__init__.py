"""shared.dev."""
