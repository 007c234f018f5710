"""Test support that third-party plugins can use too: small reference environments and fakes."""
