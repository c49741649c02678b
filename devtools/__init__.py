"""Tools for people and tests: emulators, the local run, the command line. Never deployed."""
