"""``python -m marlmesh.spread_diagnostics``: forwards to :mod:`marlmesh.experiments.spread_diagnostics`.

Kept so the documented command keeps working.
"""

import sys

from marlmesh.experiments.spread_diagnostics import main

if __name__ == "__main__":
    sys.exit(main())
