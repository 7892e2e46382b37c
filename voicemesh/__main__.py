"""``python -m voicemesh``: the same as the ``voicemesh`` command."""

import sys

from voicemesh.app.cli import main

sys.exit(main())
