import sys

from lpfast.cli import main

sys.exit(main())
