"""deploy/kubernetes/: valid Kubernetes, and in step with the image it runs.

Validated offline against Kubernetes' own schemas by kubernetes-validate, with ``--strict`` so a
misspelt or unknown field fails too. The manifests are not applied to a cluster here: what is
checked is their shape and that they say what the image and the app say (port, user, probes).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cnd_toolkit import project
from flask.testing import FlaskClient

MANIFESTS = project.ROOT / "deploy" / "kubernetes"
KUBERNETES = "1.37.0"


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", KUBERNETES, *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def resources() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        if document["kind"] != "Kustomization":
            found[document["kind"]] = document
    return found


def test_every_manifest_is_valid_kubernetes() -> None:
    paths = [p for p in sorted(MANIFESTS.glob("*.yaml")) if p.name != "kustomization.yaml"]
    assert {p.name for p in paths} == {"deployment.yaml", "service.yaml", "poddisruptionbudget.yaml"}
    done = validate(*paths)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in paths)  # kubectl apply -k applies all of them


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["ports"][0].update(containerPort=str(c["ports"][0]["containerPort"])),  # a string port
        lambda c: c["readinessProbe"].update(httpGett={"path": "/readyz"}),  # a misspelt field
        lambda c: c["securityContext"].update(runAsNonRoot="yes"),  # a string for a boolean
        lambda c: c.update(imagePullPolicy=None) or c.pop("name"),  # a required field gone
    ],
)
def test_the_check_refuses_a_broken_deployment(tmp_path: Path, mutate: Any) -> None:
    """So that the validation above can fail: each mutant of the Deployment is refused."""
    deployment = resources()["Deployment"]
    mutate(deployment["spec"]["template"]["spec"]["containers"][0])
    broken = tmp_path / "deployment.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    assert validate(broken).returncode != 0


def test_the_deployment_says_what_the_image_and_the_app_say(client: FlaskClient) -> None:
    deployment = resources()["Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    me = project.load()
    assert container["ports"][0]["containerPort"] == me.container_port
    assert {"name": "PORT", "value": str(me.container_port)} in container["env"]
    # The image's user: running as anything else would not match the files' owner.
    dockerfile = (project.ROOT / "Dockerfile").read_text()
    uid, gid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE).groups()  # type: ignore[union-attr]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pod["securityContext"]["runAsNonRoot"] is True
    hardening = container["securityContext"]
    assert hardening["readOnlyRootFilesystem"] and hardening["capabilities"]["drop"] == ["ALL"]
    assert not hardening["allowPrivilegeEscalation"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # the one writable place
    # The probes are routes the app answers 200 on, readiness on /readyz and liveness on /healthz.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert client.get(container[probe]["httpGet"]["path"]).status_code == 200, probe
    # Zero-downtime rollout and shutdown: a ready pod before an old one goes; in-flight requests
    # get gunicorn's graceful timeout after the preStop pause.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= me.graceful_timeout + pause
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests["memory"] and limits["memory"] and requests["cpu"] and limits["cpu"]
    # Names and labels stay the project's name whatever it is (a slug like "yes" or "null" is a
    # boolean or nothing to YAML unless quoted).
    for resource in resources().values():
        assert resource["metadata"]["name"] == me.slug, resource["kind"]
        assert resource["spec"]["selector"].get("matchLabels", resource["spec"]["selector"]) == {
            "app.kubernetes.io/name": me.slug
        }
    assert container["image"] == f"{me.registry_image}:latest"
    service = resources()["Service"]
    assert service["spec"]["selector"] == spec["selector"]["matchLabels"] == spec["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
