"""jikimi's shared package: the wire contract, TLS, signing, profiles, retry, errors, logging.

Everything that crosses a process boundary is defined here, so the edge, the hub and the
provisioning tools cannot disagree about it.
"""
