"""The attack harness of issue 9 (`make attack`, `python -m bench.attack`): each attack on the public surface
against a mesh of real processes on loopback, measured at sockets the harness owns and at the parts' counters."""
