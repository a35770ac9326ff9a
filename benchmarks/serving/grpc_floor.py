"""grpcio's own cost per call on this machine: a grpc.aio PredictionService whose Predict does
nothing but return a fixed, pre-built PredictResponse (the embedded server's real answer, so
the bytes on the wire are the same). The benchmark loads it with `h2load` beside the embedded
server; no server built on grpcio in one Python process can answer faster than this.

    python benchmarks/serving/grpc_floor.py PORT RESPONSE_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class FixedAnswer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, response: predict_pb2.PredictResponse) -> None:
        self.response = response

    async def Predict(self, request: object, context: object) -> predict_pb2.PredictResponse:  # noqa: N802
        return self.response


async def serve(port: int, response: predict_pb2.PredictResponse) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])  # the embedded server's option
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        FixedAnswer(response), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    answer = predict_pb2.PredictResponse.FromString(Path(sys.argv[2]).read_bytes())
    asyncio.run(serve(int(sys.argv[1]), answer))
