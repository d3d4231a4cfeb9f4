import sys

from wfdash.cli import main

sys.exit(main())
