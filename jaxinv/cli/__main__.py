import sys

from jaxinv.cli import main

sys.exit(main())
