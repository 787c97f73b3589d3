"""`python -m runner lb-probe`: the seed's curl experiment, told from the evidence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.config.profiles import resolve_profile
from runner.embedded.lbprobe import ProbeOutcome, story
from tests.conftest import needs_root_tools

REPO = Path(__file__).resolve().parent.parent


@needs_root_tools("ip", "nft", "conntrack", "tcpdump", "haproxy", "curl")
@pytest.mark.slow
def test_lb_probe_azure_tells_the_reset_story(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "runner", "lb-probe", "--profile", "azure-slb", "--idle-timeout",
                           "5", "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "curl: (56) Recv failure: Connection reset by peer after 5." in proc.stdout
    assert "the server's socket was reset too" in proc.stdout
    assert "pod.pcap" in proc.stdout and "lb-events.jsonl" in proc.stdout


def test_story_of_a_silent_drop() -> None:
    events = [{"event": "expired", "ts": 5.0}] + [
        {"event": "after-expiry", "side": "server", "ts": 15.0 + i} for i in range(7)]
    text = story(resolve_profile("gcp", {"idle_timeout": 5}),
                 ProbeOutcome(curl_rc=28, curl_stderr="", elapsed=45.0, server_fate=[], lb_events=events), 15)
    assert text.startswith("no data for 45 s")
    assert "retransmitted 7 times" in text
