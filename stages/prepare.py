"""DVC stage `prepare`: build data/prepared/ from params.yaml (see mal/datasets/prepare.py)."""

import sys

from mal.datasets.prepare import main

if __name__ == "__main__":
    sys.exit(main())
