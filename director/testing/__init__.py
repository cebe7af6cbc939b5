"""Test support shipped with the package: in-memory keys and verified fakes."""
