"""Messages a person reads every day, as they read them: the lines `inv` prints last, `inv -l`,
and what a deploy's preflight says to do. None of these needs a Docker engine."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from ops import project as proj
from ops import settings as settings_mod
from ops.release import deploy


def git_project(root: Path) -> proj.Project:
    """The project's facts with a committed tree at ``root``, for preflights."""
    for name in ("pyproject.toml", "netlify.toml"):
        (root / name).write_bytes((proj.ROOT / name).read_bytes())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], cwd=root, check=True)
    return dataclasses.replace(proj.load(), root=root)


# -- inv deploy without Netlify settings ----------------------------------------------------------


def test_a_deploy_without_netlify_settings_names_backend_only_among_its_fixes(tmp_path: Path) -> None:
    """A project whose site is not on Netlify yet can still ship its API: the preflight says how."""
    here = git_project(tmp_path)
    environ = {"BACKEND_URL": "https://api.acme.dev", "IMAGE": "registry.acme.dev/acme/x"}
    for netlify in ({}, {"NETLIFY_SITE_ID": "site-1"}, {"NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}):
        settings = settings_mod.load(tmp_path, environ={**environ, **netlify}, defaults={})
        with pytest.raises(deploy.PreflightFailed) as caught:
            deploy.preflight(here, settings, deploy.Options())
        lines = str(caught.value).splitlines()
        assert any("NETLIFY_" in line and "is not set" in line for line in lines), lines
        assert [line for line in lines if "--backend-only" in line] == [
            "  - or deploy the container alone, without Netlify: `inv deploy --backend-only`"
        ], lines
        assert deploy.preflight(here, settings, deploy.Options(netlify=False))  # the fix works as said
    # Only where it helps: --netlify-only cannot be mended by it, and a deploy with Netlify set
    # but another setting missing is not told to leave Netlify out.
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "https://api.acme.dev"}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options(backend=False))
    assert "--backend-only" not in str(caught.value)
    netlify = {"NETLIFY_SITE_ID": "site-1", "NETLIFY_AUTH_TOKEN": "nfp_token_abcdef0123456789"}
    settings = settings_mod.load(tmp_path, environ={"BACKEND_URL": "https://api.acme.dev", **netlify}, defaults={})
    with pytest.raises(deploy.PreflightFailed) as caught:
        deploy.preflight(here, settings, deploy.Options())
    assert "IMAGE is not set" in str(caught.value) and "--backend-only" not in str(caught.value)
