"""`python -m zrep.sim`: the same command as `zrep sim` (zrep.cli.sim)."""

from zrep.cli.sim import sim

sim.main(prog_name="python -m zrep.sim")
