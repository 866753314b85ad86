"""kvctl: the kvstore command line."""

import os

# Before any kvctl module imports grpc: its C core would log to stderr what kvctl reports in
# one line (a TLS handshake a node refused, for one).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
