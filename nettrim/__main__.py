"""``python -m nettrim`` runs the command line (:mod:`nettrim.cli`)."""
import sys

from .cli import main

sys.exit(main())
