"""`lb-probe --cluster` on the local cluster: the seed's story end to end, for an RST and a silent profile.

A LoadBalancer Service whose address the LB emulator gives (the cluster's profile), the timer server
behind it, `curl --no-keepalive --http0.9` from outside the cluster (a network namespace on the LB's
client side) and a pod inside it, held idle at 30 and 60 s against the quick profiles' 45 s: 30 s
survives, 60 s breaks. Behind azure-slb-quick both paths get an RST at 45 s, curl says
`curl: (56) Recv failure: Connection reset by peer` and the server's socket is reset too; behind
azure-slb-no-reset-quick both go silent, the server's line retransmitted into the void. Then nothing
is left: no namespace in the cluster (it is gone too), no netns, nft table, route or daemon here.
About 2.5 minutes per profile with the images cached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runner.host.netns import list_project_netns
from tests.conftest import needs_root_tools
from tests.test_local_cluster import _host_state, _processes

pytestmark = [needs_root_tools("ip", "go", "nft", "conntrack", "tcpdump", "haproxy", "curl"), pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent

MATRIX = """
clients:
  - name: client-go
clusters:
  - name: local-probe
    kind: local
    lb: {{profile: {profile}}}
scenarios:
  watch: {{interval: idle+20, detection_timeout: 10, rounds: 1}}
"""


def _probe(tmp_path: Path, profile: str) -> tuple[str, list[dict[str, object]], Path]:
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(MATRIX.format(profile=profile))
    (tmp_path / "clients").symlink_to(REPO / "clients")
    proc = subprocess.run([sys.executable, "-m", "runner", "lb-probe", "--cluster", "local-probe", "--matrix",
                           str(matrix), "--max-idle", "60", "--out", str(tmp_path / "out")],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = next((tmp_path / "out").glob("lb-probe-*"))
    return proc.stdout, json.loads((out / "probe.json").read_text()), out


def _nothing_left(stdout: str, out: Path, before: dict[str, object]) -> None:
    assert "teardown problem" not in stdout
    run_id = stdout.split("local cluster local-probe: run ", 1)[1].split()[0]
    assert not _processes(run_id)
    assert not [n for n in list_project_netns() if run_id in n]
    assert _host_state() == before
    vip = stdout.split("LoadBalancer at ", 1)[1].split()[0]
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert run_id not in routes and vip not in routes, routes
    # The run's namespace in the cluster was deleted and gone before the cluster went down.
    teardown = json.loads(next(out.glob("clusters/*/teardown.json")).read_text())
    assert teardown and set(teardown.values()) == {"gone"}, teardown


def test_rst_profile_tells_the_seeds_story(tmp_path: Path) -> None:
    before = _host_state()
    stdout, paths, out = _probe(tmp_path, "azure-slb-quick")
    by = {p["path"]: p for p in paths}
    for path in ("outside", "inside"):
        p = by[path]
        assert (p["survived"], p["broke"], p["how"], p["matches"]) == (30, 60, "rst-both", ["azure-slb-quick"]), p
        assert 43 <= p["cut_after"] <= 48, p
        fate = next(x for x in p["fates"] if x["idle"] == 60)
        assert fate["server"]["outcome"] == "reset" and fate["lb"]["rst_to"] == ["client", "server"]
    outside = stdout.split("\noutside: ", 1)[1].split("\ninside: ", 1)[0]
    assert "curl: (56) Recv failure: Connection reset by peer after 4" in outside
    assert "the server's socket was reset too" in outside and "matches azure-slb-quick" in outside
    # The runner's own identity deployed the probe, with exactly the kube-rbac role.
    assert "may do more than its job needs" not in stdout
    assert "runner's rights: exactly its job's" in (out / "runner-rbac.log").read_text()
    _nothing_left(stdout, out, before)


def test_silent_profile_tells_the_silent_drop(tmp_path: Path) -> None:
    before = _host_state()
    stdout, paths, out = _probe(tmp_path, "azure-slb-no-reset-quick")
    for p in paths:
        assert (p["survived"], p["broke"], p["how"]) == (30, 60, "silent"), p
        assert "azure-slb-no-reset-quick" in p["matches"] and "azure-slb-quick" not in p["matches"], p
        fate = next(x for x in p["fates"] if x["idle"] == 60)
        assert fate["client"]["outcome"] == "silent" and fate["server"]["outcome"] == "timeout"
        assert fate["server"]["retransmissions"] > 0 and fate["lb"]["dropped"] > 0, fate
    outside = stdout.split("\noutside: ", 1)[1].split("\ninside: ", 1)[0]
    assert "curl: (28)" in outside and "retransmissions into the void" in outside
    _nothing_left(stdout, out, before)


def test_ctrl_c_while_the_connections_are_held_leaves_nothing(tmp_path: Path) -> None:
    import signal
    import time

    before = _host_state()
    matrix = tmp_path / "matrix.yaml"
    matrix.write_text(MATRIX.format(profile="azure-slb-quick"))
    (tmp_path / "clients").symlink_to(REPO / "clients")
    proc = subprocess.Popen([sys.executable, "-m", "runner", "lb-probe", "--cluster", "local-probe", "--matrix",
                             str(matrix), "--max-idle", "60", "--out", str(tmp_path / "out")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "LoadBalancer at" in line:
            break
    time.sleep(10)  # the clients connected and idle
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=180)
    stdout = "".join(lines) + rest
    print(stdout[-4000:], err[-2000:])
    assert proc.returncode == 2, err
    assert "interrupted" in err
    _nothing_left(stdout, next((tmp_path / "out").glob("lb-probe-*")), before)
