"""`make faults`: the faults a global mesh lives with (issue 11), injected into real processes mid-call."""
