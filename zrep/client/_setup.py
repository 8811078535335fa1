"""What the blocking and the asyncio client set up alike: the config, the call steps, the links.

Job: `ClientSetup.__init__` loads the cluster file (if given a path), makes the
shared call logic (zrep.client._calls.Calls) and this client's links with its
CURVE settings; each client says only which links it drives and whether its
calls may overlap.
Invariants: nothing connects here: links open on first use.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zrep.client._calls import Calls
from zrep.client._links import Curve, curve_for
from zrep.client._retry import DEFAULT_ATTEMPT_TIMEOUT_S, DEFAULT_TIMEOUT_S
from zrep.config import ClusterConfig, load_config


class ClientSetup:
    _concurrent = False  # the asyncio client: calls may overlap

    def __init__(
        self,
        config: ClusterConfig | str | Path,
        *,
        client_id: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        attempt_timeout_s: float = DEFAULT_ATTEMPT_TIMEOUT_S,
        key: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config if isinstance(config, ClusterConfig) else load_config(config)
        self._calls = Calls(self.config, client_id, timeout_s, attempt_timeout_s, concurrent=self._concurrent)
        self.client_id = self._calls.client_id
        self.timeout_s = timeout_s
        self.attempt_timeout_s = attempt_timeout_s
        # key: this client's secret key file, required when the cluster runs with security.mode = "curve"
        self._links = self._new_links(self._calls.route.addresses, self.config.max_frame_bytes,
                                      curve_for(self.config, key))

    def _new_links(self, addresses: dict[int, str], max_frame_bytes: int, curve: Curve | None) -> Any:
        raise NotImplementedError
