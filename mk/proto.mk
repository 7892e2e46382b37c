# Regenerates the gRPC stubs of the agent bridge (imported as voicemesh.agent.v1.agent_pb2).
.PHONY: proto
proto:
	.venv/bin/python -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/voicemesh/agent/v1/agent.proto
