"""The wire layer: the contracts both the edge and the transceiver speak, standard library only.

STUN (RFC 8489) parsing for the relay and the mux, the routing token (the server ICE ufrag), the backbone
frame, socket address text, the WHIP hop headers and limits, and great-circle distance. Nothing here imports
another voicemesh package; every other layer may import this one.
"""
