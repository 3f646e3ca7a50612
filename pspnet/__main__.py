"""``python -m pspnet`` (and ``torchrun -m pspnet train ...``)."""

import sys

from pspnet.cli import main

sys.exit(main())
