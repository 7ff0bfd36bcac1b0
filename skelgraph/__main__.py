import sys

from skelgraph.cli import main

sys.exit(main())
