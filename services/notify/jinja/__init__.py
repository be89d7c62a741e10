"""Jinja2 templates of the notify service (a package so that built wheels ship the .j2 files)."""
