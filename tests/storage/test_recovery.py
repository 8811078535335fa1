"""force-new-cluster: a survivor's log becomes a one-voter cluster that commits all of it."""

from __future__ import annotations

import random

from zrep.core.log import LogView
from zrep.core.membership import Config, Member, encode_config, static_config
from zrep.core.messages import Entry, HardState, Role
from zrep.core.replica import Replica
from zrep.storage.recovery import force_new_cluster, rank_of
from zrep.storage.wal import Wal


def test_the_survivor_keeps_its_whole_log_and_leads_alone(tmp_path):
    path = tmp_path / "wal"
    three = Config(5, (Member(1, 11, rpc="tcp://127.0.0.1:1"), Member(2, 22), Member(3, 33)))
    wal, _ = Wal.open(path)
    with wal:
        wal.set_hard_state(HardState(4, 2))
        wal.append_entries([Entry(1, 1, encode_config(three)), Entry(2, 2, b""), Entry(4, 3, b"x"), Entry(4, 4, b"y")])
        wal.set_commit(2)  # a hint: 3 and 4 may well be acknowledged writes
        wal.sync()
    assert (rank_of(path).last_epoch, rank_of(path).last_index) == (4, 4)
    config, index = force_new_cluster(path, 1, 11, None)
    assert index == 5 and config.voters == (1,) and config.cluster_id != 5
    assert config.member(1).rpc == "tcp://127.0.0.1:1"
    wal, replay = Wal.open(path)
    wal.close()
    assert [e.index for e in replay.entries] == [1, 2, 3, 4, 5] and replay.entries[-1].epoch == 5
    rep = Replica(1, static_config([1, 2, 3]), incarnation=11, rng=random.Random(1), hard_state=replay.hard_state,
                  log=LogView(replay.entries), commit=replay.commit)
    assert rep.config == config
    for _ in range(20 * rep.timing.election_ticks):
        rep.tick()
        ready = rep.ready()
        rep.advance(ready)
        if rep.role == Role.LEADER and rep.commit == rep.log.last_index:
            break
    assert rep.role == Role.LEADER and rep.commit == 6  # its no-op at 6 commits 3, 4 and the configuration
