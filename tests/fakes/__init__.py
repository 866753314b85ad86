"""In-process stand-ins for kvstore servers, for tests of code that talks to a cluster."""
