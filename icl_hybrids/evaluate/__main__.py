"""python -m icl_hybrids.evaluate key=value ... (docs/evaluation.md)"""
import logging
import sys

from . import main

logging.basicConfig(level=logging.WARNING)
sys.exit(main())
