"""`python -m zrep.node --config F --id N`: run one node (the same start-up as `zrep node`)."""

import sys

from zrep.node.loop import main

sys.exit(main())
