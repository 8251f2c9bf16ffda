"""The pool seen whole: `farcuda status` over several servers or a pool file, against real
daemons (in-memory backend) with a real client holding SM-budgeted and whole devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest


def _farcuda(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")
         and k != "LD_PRELOAD"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "farcuda.interposer.cli", *args],
                          capture_output=True, text=True, env=e, timeout=60)


@pytest.fixture
def two_servers(tmp_path, fc):
    auth = {"auth": {"tokens": {"pool": "pool-secret"}}}
    a = fc.start_daemon(tmp_path, "memory", config=auth, backend_options={"gpus": 2})
    b = fc.start_daemon(tmp_path, "memory", config=auth)
    yield a, b
    a.stop()
    b.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pool_table_and_json(two_servers, program, shim, tmp_path, fc):
    a, b = two_servers
    dead = f"127.0.0.1:{_free_port()}"
    (tmp_path / "token").write_text("pool-secret\n")
    pool = tmp_path / "pool.toml"
    pool.write_text(f'name = "lab"\ntoken_file = "token"\n'
                    f'[[servers]]\naddress = "{a.address}"\ngpus = [0]\n'
                    f'[[servers]]\naddress = "{a.address}"\ngpus = [1]\nslices = 2\nsm = 64\n'
                    f'[[servers]]\naddress = "{b.address}"\n'
                    f'[[servers]]\naddress = "{dead}"\ngpus = 2\n')
    release = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARCUDA_")}
    env.update(LD_PRELOAD=str(shim), FARCUDA_TOKEN="pool-secret", FARCUDA_JOB="slurm:41",
               FARCUDA_DEVICES=f"{a.address}/1@sm=64,{a.address}/1@sm=64,{b.address}/0")
    holder = subprocess.Popen([str(program("ci_cluster")), str(release), "60"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        lines = [holder.stdout.readline() for _ in range(5)]
        assert lines == ["devices 3\n", "device 0 sms 64\n", "device 1 sms 64\n",
                         "device 2 sms 132\n", "holding\n"], lines
        r = _farcuda("status", "--pool", str(pool))
        assert r.returncode == 1, r.stderr  # one server of the pool is down
        rows = {tuple(ln.split()[:2]): ln for ln in r.stdout.splitlines()[1:]}
        assert r.stdout.splitlines()[0].split()[:4] == ["SERVER", "GPU", "NAME", "POOL"]
        assert rows[(a.address, "0")].split()[-7:] == [
            "8.0", "GiB", "132", "-", "0", "-", "-"]
        line = rows[(a.address, "1")]
        assert "vgpu 2x64" in line and " 64+64 " in line
        assert line.split()[-3:] == ["1", "pool", "slurm:41"]
        assert "8.0 GiB / 8.0 GiB" in line  # 2 MiB held of 8 GiB: free shown to 0.1 GiB
        assert " all " in rows[(b.address, "0")] and rows[(b.address, "0")].endswith("slurm:41")
        for g in ("0", "1"):
            assert "unreachable" in rows[(dead, g)] and "(pool: gpu)" in rows[(dead, g)]
        # the same servers named by hand, as JSON: each GPU of each server with its figures
        r = _farcuda("status", "--server", a.address, "--server", b.address, "--json",
                     env={"FARCUDA_TOKEN": "pool-secret"})
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        g0, g1 = st[a.address]["gpus"]
        assert g0["sessions"] == 0 and g0["sm_groups"] == [] and g0["memory_free"] == 8 << 30
        assert g1["sessions"] == 1 and g1["tenants"] == 1 and g1["tenant_names"] == ["pool"]
        assert g1["memory_free"] == (8 << 30) - (2 << 20) and g1["sm_count"] == 132
        assert [(x["device"], x["sm_budget"], x["job"]) for x in g1["sm_groups"]] == [
            (0, 64, "slurm:41"), (1, 64, "slurm:41")]
        (gb,) = st[b.address]["gpus"]
        assert [(x["device"], x["sm_budget"]) for x in gb["sm_groups"]] == [(2, 0)]
        (t,) = st[b.address]["tenants"]
        assert t["identity"]["job"] == "slurm:41"
    finally:
        release.touch()
        out = holder.communicate(timeout=30)[0]
    assert holder.returncode == 0 and out.endswith("PASSED\n"), out
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = _farcuda("status", "--server", a.address, "--server", b.address, "--json",
                     env={"FARCUDA_TOKEN": "pool-secret"})
        if all(not s["tenants"] for s in json.loads(r.stdout).values()):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the sessions outlived their client")


def test_bad_pool_file_is_exit_2(tmp_path):
    (tmp_path / "p.toml").write_text("[[servers]]\ngpus = 1\n")
    r = _farcuda("status", "--pool", str(tmp_path / "p.toml"))
    assert r.returncode == 2 and "address" in r.stderr and "p.toml" in r.stderr
