import sys

from seesr.cli import main

sys.exit(main())
