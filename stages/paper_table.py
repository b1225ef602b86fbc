"""DVC stage `paper_table`: reports/paper_table.{md,csv} + retention.png (see mal/report.py)."""

import sys

from mal.report import main

if __name__ == "__main__":
    sys.exit(main())
