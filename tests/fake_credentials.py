"""A stand-in for auth's CredentialService on loopback: keys map to tenants, created credentials are kept.

It authorizes like the real service promises (``credentials.proto``): the caller's key comes as
``authorization: Bearer <key>`` metadata, an unknown key is UNAUTHENTICATED, and a tenant key acts
for its own tenant only. Secrets are kept in memory for the test to inspect; answers carry only the
last four characters.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.auth.v1 import credentials_pb2, credentials_pb2_grpc


@dataclass
class Stored:
    """One created credential, with its secret in clear (a fake keeps what the real one encrypts)."""

    tenant_id: str
    request: credentials_pb2.CreateCredentialRequest
    credential: credentials_pb2.Credential


class FakeCredentialService(credentials_pb2_grpc.CredentialServiceServicer):
    """ListCredentials and CreateCredential for the tenants of ``keys`` (key -> tenant)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)
        self.stored: list[Stored] = []
        self.list_calls = 0
        self._ids = itertools.count(1)

    def _tenant(self, context: Any, named: str) -> str:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        scheme, _, key = metadata.get("authorization", "").partition(" ")
        tenant = self.keys.get(key) if scheme.lower() == "bearer" else None
        if tenant is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")
        if named and named != tenant:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "a tenant key may only manage its own tenant")
        return str(tenant)

    def ListCredentials(
        self, request: credentials_pb2.ListCredentialsRequest, context: Any
    ) -> credentials_pb2.ListCredentialsResponse:
        tenant = self._tenant(context, request.tenant_id)
        self.list_calls += 1
        return credentials_pb2.ListCredentialsResponse(
            credentials=[
                s.credential
                for s in self.stored
                if s.tenant_id == tenant and (not request.provider or s.credential.provider == request.provider)
            ]
        )

    def CreateCredential(
        self, request: credentials_pb2.CreateCredentialRequest, context: Any
    ) -> credentials_pb2.CreateCredentialResponse:
        tenant = self._tenant(context, request.tenant_id)
        secret = request.secret
        oauth = secret.WhichOneof("secret") == "oauth"
        clear = secret.oauth.access_token if oauth else secret.api_key
        credential = credentials_pb2.Credential(
            credential_id=f"cred-{next(self._ids)}",
            tenant_id=tenant,
            provider=request.provider,
            kind=credentials_pb2.CREDENTIAL_KIND_OAUTH if oauth else credentials_pb2.CREDENTIAL_KIND_API_KEY,
            name=request.name,
            state=credentials_pb2.CREDENTIAL_STATE_ACTIVE,
            secret_last_four=clear[-4:],
        )
        if oauth and secret.oauth.HasField("expires_at"):
            credential.expires_at.CopyFrom(secret.oauth.expires_at)
        self.stored.append(Stored(tenant, request, credential))
        return credentials_pb2.CreateCredentialResponse(credential=credential)

    def _unimplemented(self, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the fake")

    def UpdateCredential(self, request: Any, context: Any) -> Any:
        return self._unimplemented(context)

    def RotateCredential(self, request: Any, context: Any) -> Any:
        return self._unimplemented(context)

    def DeleteCredential(self, request: Any, context: Any) -> Any:
        return self._unimplemented(context)

    def ResolveCredentials(self, request: Any, context: Any) -> Any:
        return self._unimplemented(context)

    def StoreRefreshedTokens(self, request: Any, context: Any) -> Any:
        return self._unimplemented(context)


@contextmanager
def fake_credential_service(keys: Mapping[str, str]) -> Iterator[tuple[str, FakeCredentialService]]:
    """The fake on a free loopback port (plaintext); yields its address and the servicer."""
    servicer = FakeCredentialService(keys)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    credentials_pb2_grpc.add_CredentialServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None)
