import sys

from tunegate.cli import main

sys.exit(main())
