"""`python -m linli.cli`: the linli command."""

import sys

from linli.cli.main import main

sys.exit(main())
