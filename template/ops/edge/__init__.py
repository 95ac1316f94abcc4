"""A local Netlify edge: serves the publish directory and applies ``_redirects``, ``_headers``
and ``netlify.toml`` rules the way Netlify does, proxying ``/api/*`` to a local backend.

``rules`` parses and matches (pure, no I/O beyond reading the files); ``server`` serves
(aiohttp). Neither imports Docker, so the edge runs in front of any backend.
"""
