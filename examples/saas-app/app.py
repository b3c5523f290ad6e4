"""The web process: `python app.py` (the Procfile's `web:` line). Listens on $PORT."""

import sys

from saasapp.server import main

if __name__ == "__main__":
    sys.exit(main())
