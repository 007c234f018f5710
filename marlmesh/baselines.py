"""``python -m marlmesh.baselines``: forwards to :mod:`marlmesh.experiments.baselines` (the documented command)."""

import sys

from marlmesh.experiments.baselines import main

if __name__ == "__main__":
    sys.exit(main())
