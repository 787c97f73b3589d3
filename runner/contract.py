"""Names the runner, the watchers (clients/README.md) and the reports share, each defined once."""

from __future__ import annotations

from typing import Final, Literal

#: The scenarios a cell can run (clients/README.md: WATCHDROP_SCENARIO).
WATCH: Final = "watch"
IDLE_REQUEST: Final = "idle-request"
SCENARIOS: Final = (WATCH, IDLE_REQUEST)
Scenario = Literal["watch", "idle-request"]

#: The ConfigMap the harness updates every round of the watch scenario.
TRIGGER: Final = "trigger"

#: kube-apiserver's port, the one every LB VIP and front forwards, and the one captures read as the server's.
API_PORT: Final = 6443
