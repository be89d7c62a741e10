"""Helpers shared by several test modules (fakes, builders, fixtures): test modules import from
here, never from one another."""
