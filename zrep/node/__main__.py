"""`python -m zrep.node --config F --id N`: the same click command as `zrep node` (one implementation)."""

from zrep.cli.node import node

node.main(prog_name="python -m zrep.node")
