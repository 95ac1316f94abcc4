"""Maintainer tooling for the template repository (base images, demo, benchmark)."""
