"""python -m pixelfolder_ops: the install's self-check (see pixelfolder_ops.selfcheck)."""
import sys

from .selfcheck import main

sys.exit(main())
