"""Regional transceiver: aiortc sessions, the backbone mux, and the agent bridge over gRPC."""
