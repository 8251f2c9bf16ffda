"""The Kubernetes manifests (cluster/deploy/kubernetes) are valid against the Kubernetes
schemas (kubernetes-validate, offline, strict: no field the API does not know), and what they
hand farcuda (the daemon's configuration, the pool file, both programs' arguments) is what
farcuda itself accepts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from farcuda.cluster.pool import from_dict
from farcuda.daemon import cli as daemon_cli
from farcuda.daemon.config import from_dict as daemon_config

# (packages of the test extra are not on the offline GPU machine: skipped there)
kubernetes_validate = pytest.importorskip("kubernetes_validate")
yaml = pytest.importorskip("yaml")
plugin = pytest.importorskip("farcuda.cluster.deviceplugin.plugin")

DEPLOY = Path(__file__).resolve().parents[2] / "cluster" / "deploy" / "kubernetes"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


def _docs() -> list[tuple[str, dict]]:
    return [(f"{p.name}#{i}", d) for p in MANIFESTS
            for i, d in enumerate(yaml.safe_load_all(p.read_text())) if d]


def _find(kind: str, name: str) -> dict:
    (doc,) = [d for _, d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_there_are_manifests():
    assert {p.name for p in MANIFESTS} >= {"farcudad.yaml", "device-plugin.yaml",
                                            "example-pod.yaml"}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name, doc", _docs(), ids=[n for n, _ in _docs()])
def test_manifest_is_valid(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_a_broken_manifest_is_caught():
    doc = _find("DaemonSet", "farcudad")
    bad = yaml.safe_load(yaml.safe_dump(doc))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "7420"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)


def test_what_the_manifests_hand_farcuda_is_accepted():
    cfg = daemon_config(tomllib.loads(_find("Secret", "farcudad-config")["stringData"]
                                      ["farcudad.toml"]))
    token = _find("Secret", "farcuda-token")["stringData"]["token"]
    assert token in cfg.tokens.values()  # the plugin's token is one the daemons accept
    pool = from_dict(tomllib.loads(_find("ConfigMap", "farcuda-pool")["data"]["pool.toml"]))
    assert pool.resource("gpu") == "farcuda.io/gpu" and pool.of_kind("vgpu")
    ds = _find("DaemonSet", "farcuda-device-plugin")["spec"]["template"]["spec"]
    args = ds["containers"][0]["args"]
    assert args[0] == "farcuda-device-plugin"
    parsed = plugin.build_parser().parse_args(args[1:])
    mounts = {m["mountPath"] for m in ds["containers"][0]["volumeMounts"]}
    assert Path(parsed.pool).parent.as_posix() in mounts
    assert Path(parsed.token_file).parent.as_posix() in mounts
    assert str(parsed.kubelet_dir) in mounts
    host = {v["name"]: v.get("hostPath", {}).get("path") for v in ds["volumes"]}
    assert parsed.client_host_dir == host["client"]
    d = _find("DaemonSet", "farcudad")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert d[0] == "farcudad"
    assert daemon_cli.build_parser().parse_args(d[1:]).config == "/etc/farcuda/farcudad.toml"
    limits = _find("Pod", "cuda-on-farcuda")["spec"]["containers"][0]["resources"]["limits"]
    assert set(limits) <= {pool.resource("gpu"), pool.resource("vgpu")}
