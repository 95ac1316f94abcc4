"""The Docker engine through the Docker SDK (no shell strings): :mod:`~cnd_toolkit.docker.engine` connects,
:mod:`~cnd_toolkit.docker.images` builds, pushes and cleans, :mod:`~cnd_toolkit.docker.containers` runs and
health-gates. ``python -m cnd_toolkit.docker`` exits 0 when an engine answers.
"""
