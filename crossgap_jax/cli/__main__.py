"""``python -m crossgap_jax.cli``."""

import sys

from crossgap_jax.cli.main import main

sys.exit(main())
