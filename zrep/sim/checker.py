"""`Checker`: the promises, checked while the simulation runs.

Safety, after every step:
  * at most one leader per epoch;
  * log matching: two logs holding an entry with the same (epoch, index)
    hold the same entries up to it (a hash chain per node log);
  * state machine safety: no two replicas apply different entries at one
    index (the notebook's critical point);
  * an acknowledged write sits, applied once, at the index it was
    acknowledged with; no body is ever stored twice;
  * commit and applied never go back within one life of a replica;
  * store states are equal at equal applied index (the store's digest chains
    every applied entry; compared after each apply, snapshot and install);
  * a log compacted or replaced by a snapshot continues the hash chain of the
    entry the snapshot ends at: the kept suffix and later appends must match;
  * a linearizable read sees every write acknowledged before it began.
Convergence (liveness) is judged by the cluster after the faults heal.
Must not import os, time or zmq.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zrep.core.log import LogView
from zrep.core.messages import Entry
from zrep.store.commands import command_key


class Violation(Exception):
    """A promise broke. The message says which one, where and when."""


@dataclass
class Ack:
    client: str
    seq: int
    mailbox: str
    body: bytes
    index: int
    offset: int
    tick: int


@dataclass
class Checker:
    leaders: dict[int, int] = field(default_factory=dict)  # epoch -> leader
    _chains: dict[int, list[int]] = field(default_factory=dict)  # node -> chain hash per index
    _chain_at: dict[tuple[int, int], int] = field(default_factory=dict)  # (index, epoch) -> chain hash
    applied: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # index -> (epoch, data)
    acks: dict[tuple[str, int], Ack] = field(default_factory=dict)
    _acks_by_box: dict[str, list[Ack]] = field(default_factory=dict)
    _acks_by_index: dict[int, list[Ack]] = field(default_factory=dict)
    _high: dict[int, tuple[int, int]] = field(default_factory=dict)  # node -> (commit, applied) this life
    now: int = 0
    _complete_checked: set[int] = field(default_factory=set)
    commit_epoch: dict[int, int] = field(default_factory=dict)  # index -> epoch of the leader that committed it
    _committed_upto: int = 0
    _digest_at: dict[int, str] = field(default_factory=dict)  # applied index -> store digest

    def fail(self, what: str) -> None:
        raise Violation(f"tick {self.now}: {what}")

    # ------------------------------------------------------------ roles

    def saw_leader(self, node: int, epoch: int, log: LogView) -> None:
        other = self.leaders.setdefault(epoch, node)
        if other != node:
            self.fail(f"two leaders in epoch {epoch}: nodes {other} and {node}")
        if epoch not in self._complete_checked:
            self._complete_checked.add(epoch)
            # Leader completeness (Raft 5.4): a leader holds every entry committed
            # in an earlier epoch. (A late leader of an old epoch may lack entries
            # committed since: it can never commit anything itself.)
            for index, term in self.commit_epoch.items():
                if term >= epoch or index not in self.applied or index < log.first_index:
                    continue  # (below its log start: in its snapshot, which the digest checks cover)
                e, data = self.applied[index]
                have = log.entry(index) if log.first_index <= index <= log.last_index else None
                if have is None or (have.epoch, have.data) != (e, data):
                    self.fail(f"leader {node} of epoch {epoch} lacks entry ({e}, {index}) committed in epoch {term}")

    def saw_commit(self, leader_epoch: int, commit: int) -> None:
        """A leader's commit index: remember in which epoch each index first committed."""
        for index in range(self._committed_upto + 1, commit + 1):
            self.commit_epoch[index] = leader_epoch
        self._committed_upto = max(self._committed_upto, commit)

    def saw_progress(self, node: int, commit: int, applied: int) -> None:
        old_commit, old_applied = self._high.get(node, (0, 0))
        if commit < old_commit or applied < old_applied:
            self.fail(f"node {node} went back: commit {old_commit}->{commit}, applied {old_applied}->{applied}")
        self._high[node] = (commit, applied)

    def restarted(self, node: int, entries: list[Entry], first_index: int = 1, prev_epoch: int = 0) -> None:
        self._high.pop(node, None)
        self._chains[node] = self._chain_upto(node, first_index - 1, prev_epoch)
        self.appended(node, entries)

    def installed(self, node: int, index: int, epoch: int, kept: bool) -> None:
        """A snapshot of (index, epoch) replaced the node's log up to index (keeping its suffix if `kept`)."""
        chain = self._chains.get(node, [])
        if kept and len(chain) >= index and chain[index - 1] == self._chain_at.get((index, epoch)):
            return
        if kept:
            self.fail(f"node {node} kept its log after a snapshot of ({epoch}, {index}) it does not hold")
        self._chains[node] = self._chain_upto(node, index, epoch)

    def _chain_upto(self, node: int, index: int, epoch: int) -> list[int]:
        """A chain for a log that starts after (index, epoch): only its last link is known."""
        if index == 0:
            return []
        h = self._chain_at.get((index, epoch))
        if h is None:
            self.fail(f"node {node}'s log starts after ({epoch}, {index}), an entry no log ever held")
        return [0] * (index - 1) + [h]  # type: ignore[list-item]

    def store_at(self, node: int, index: int, digest: str) -> None:
        seen = self._digest_at.setdefault(index, digest)
        if seen != digest:
            self.fail(f"node {node}'s store at applied index {index} differs from another node's there")

    # ------------------------------------------------------------ logs

    def appended(self, node: int, entries: list[Entry] | tuple[Entry, ...]) -> None:
        chain = self._chains.setdefault(node, [])
        for e in entries:
            if e.index != len(chain) + 1:
                self.fail(f"node {node} appended index {e.index} after {len(chain)}")
            h = hash((chain[-1] if chain else 0, e.epoch, e.index, e.data))
            chain.append(h)
            known = self._chain_at.setdefault((e.index, e.epoch), h)
            if known != h:
                self.fail(f"log matching broken: node {node} holds ({e.epoch}, {e.index}) with another prefix")

    def truncated(self, node: int, from_index: int) -> None:
        chain = self._chains.setdefault(node, [])
        del chain[from_index - 1 :]

    def applied_entry(self, node: int, entry: Entry) -> None:
        seen = self.applied.setdefault(entry.index, (entry.epoch, entry.data))
        if seen != (entry.epoch, entry.data):
            self.fail(
                f"node {node} applied ({entry.epoch}, {entry.index}) but ({seen[0]}, {entry.index}) "
                f"was applied elsewhere: two servers hold a different commit {entry.index}"
            )
        self._check_ack_at(entry.index)

    # ------------------------------------------------------------ clients

    def acked(self, ack: Ack) -> None:
        key = (ack.client, ack.seq)
        old = self.acks.get(key)
        if old is not None and (old.index, old.offset) != (ack.index, ack.offset):
            self.fail(f"write {key} acknowledged twice with different places {old.index} and {ack.index}")
        if old is None:
            self.acks[key] = ack
            self._acks_by_box.setdefault(ack.mailbox, []).append(ack)
            self._acks_by_index.setdefault(ack.index, []).append(ack)
        self._check_ack_at(ack.index)

    def _check_ack_at(self, index: int) -> None:
        seen = self.applied.get(index)
        if seen is None:
            return
        key = command_key(seen[1])
        for ack in self._acks_at(index):
            if key != (ack.client, ack.seq):
                self.fail(f"write {(ack.client, ack.seq)} acknowledged at index {index}, which holds {key}")

    def _acks_at(self, index: int) -> list[Ack]:
        return self._acks_by_index.get(index, [])

    def read_returned(self, mailbox: str, start_tick: int, bodies: list[bytes]) -> None:
        got = set(bodies)
        if len(got) != len(bodies):
            self.fail(f"read of {mailbox} returned a body twice")
        for ack in self._acks_by_box.get(mailbox, ()):
            if ack.tick < start_tick and ack.body not in got:
                self.fail(
                    f"stale linearizable read of {mailbox} begun at tick {start_tick}: misses "
                    f"write {(ack.client, ack.seq)} acknowledged at tick {ack.tick} (index {ack.index})"
                )
