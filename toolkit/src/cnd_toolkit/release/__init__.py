"""Releases on a Docker host: the deploy lock, the shared Caddy's site blocks, release records."""
