"""The application on top of the parts: command line, test client, embedded demo mesh, netns lab."""
