"""``python -m icl_hybrids.bench [quick=true] [json=FILE] ...``: see ``icl_hybrids.bench`` and ``--help``."""
import sys

from .driver import main

if __name__ == "__main__":
    sys.exit(main())
