"""``python -m cnnpipe.report ...`` is ``cnnpipe report ...`` (CI runs the checkout's own code
this way), with the command's one-line errors and exit statuses."""

import sys

from cnnpipe.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
