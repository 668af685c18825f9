from gateway_common.grpc_server import main
from services.router.server import build

main("router", build)
