"""voicemesh: command line, configuration, test client and the embedded quick-start mesh."""
