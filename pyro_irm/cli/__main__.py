"""``python -m pyro_irm.cli``: the same as ``pyro-irm``."""

import sys

from pyro_irm.cli.app import main

sys.exit(main())
