"""kvctl: the kvstore command line."""
