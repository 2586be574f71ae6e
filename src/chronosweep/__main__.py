import sys

from chronosweep.cli import main

sys.exit(main())
