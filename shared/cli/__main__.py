"""`python -m shared.cli`: the `motcua` command without the console script."""
import sys

from shared.cli import main

sys.exit(main())
