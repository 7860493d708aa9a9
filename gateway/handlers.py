"""The gateway's gRPC handlers, built from the contracts' descriptors: one generic handler per public service."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass

from gateway.proxy import Gateway
from gateway.routes import PUBLIC_SERVICES, ROUTES, Route

__all__ = ["generic_handlers"]


def _method_handler(gateway: Gateway, path: str, route: Route, method: Any) -> grpc.RpcMethodHandler:
    request_type = GetMessageClass(method.input_type)
    response_type = GetMessageClass(method.output_type)
    serialize, deserialize = response_type.SerializeToString, request_type.FromString
    if method.client_streaming and method.server_streaming:
        return grpc.stream_stream_rpc_method_handler(
            lambda requests, context: gateway.bidi(path, route, requests, request_type, response_type, context),
            deserialize,
            serialize,
        )
    if method.client_streaming:
        return grpc.stream_unary_rpc_method_handler(
            lambda requests, context: gateway.client_stream(
                path, route, requests, request_type, response_type, context
            ),
            deserialize,
            serialize,
        )
    if method.server_streaming:
        return grpc.unary_stream_rpc_method_handler(
            lambda request, context: gateway.server_stream(path, route, request, response_type, context),
            deserialize,
            serialize,
        )
    return grpc.unary_unary_rpc_method_handler(
        lambda request, context: gateway.unary(path, route, request, response_type, context), deserialize, serialize
    )


def generic_handlers(gateway: Gateway) -> dict[str, grpc.GenericRpcHandler]:
    """Public service name -> its generic handler, every method built from the contract's descriptor."""
    pool = descriptor_pool.Default()
    handlers = {}
    for service_name, default_service in PUBLIC_SERVICES.items():
        service = pool.FindServiceByName(service_name)
        methods = {}
        for method in service.methods:
            path = f"/{service_name}/{method.name}"
            methods[method.name] = _method_handler(gateway, path, ROUTES.get(path, Route(default_service)), method)
        handlers[service_name] = grpc.method_handlers_generic_handler(service_name, methods)
    return handlers
