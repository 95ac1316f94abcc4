"""A local Netlify edge: serves the publish directory and applies ``_redirects``, ``_headers``
and ``netlify.toml`` rules the way Netlify does, proxying ``/api/*`` to a local backend.

The rules come parsed from ``cnd_toolkit.netlify.config``. ``routing`` decides what Netlify would do
with a request (pure); ``server`` serves (aiohttp); ``proxy`` forwards to an origin; ``limits``
bounds what clients and origins may hold. None imports Docker, so the edge runs in front of
any backend.
"""
