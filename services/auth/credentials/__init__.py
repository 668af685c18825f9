"""Upstream credentials tenants own, sealed with envelope encryption (see ``envelope.py``).

``envelope`` seals and opens secrets with per-credential data keys wrapped by key-encryption keys;
``keyring`` loads those keys from the environment or a file; ``store`` keeps sealed rows;
``domain`` decides (who may act on which tenant, validation, the resolve cache, re-wrapping);
``servicer`` translates the ``CredentialService`` RPCs.
"""
