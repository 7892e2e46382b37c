"""``python -m voicemesh``: the same as the ``voicemesh`` command."""

import sys

from voicemesh.cli import main

sys.exit(main())
