"""Netlify's half of the project: its configuration model, the checks, the build step.

``config`` parses netlify.toml, ``_redirects`` and ``_headers`` once into one model that the
local edge, ``inv check`` and the build step share. Standard library only: the build step runs
in Netlify's build image before any dependency is installed.
"""
