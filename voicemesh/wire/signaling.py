"""The signaling hop from an edge's WHIP front (RFC 9725) to a transceiver's API: media type, limits, and
the headers an edge adds to the caller's offer."""

SDP_TYPE = "application/sdp"
"""Content type of offers and answers (RFC 9725 4.2)."""

MAX_OFFER_BYTES = 64 * 1024
"""Largest offer accepted (bytes), at the edge and at the transceiver. Browser audio offers are 3-6 KiB."""

EDGE_ID = "Voicemesh-Edge-Id"
"""Header: the forwarding edge's id (decimal, 0..65535), the one its backbone frames carry."""

RELAY_ADDRESS = "Voicemesh-Relay-Address"
"""Header: the edge relay's public UDP address (``host:port``), the answer's only candidate."""

RELAY_TCP_ADDRESS = "Voicemesh-Relay-Tcp-Address"
"""Header: the edge relay's public ICE-TCP address (``host:port``, RFC 6544 passive), if it has one; the
answer then carries a second candidate, ``tcptype passive`` on it, after the UDP one."""

CLIENT_ADDRESS = "Voicemesh-Client-Address"
"""Header: the caller's IP address as the edge saw it (for logs and geo)."""

TRICKLE_TYPE = "application/trickle-ice-sdpfrag"
"""Content type of a WHIP PATCH (trickle ICE or ICE restart) and of an ICE restart's answer (RFC 8840,
RFC 9725 4.3)."""

MAX_SDPFRAG_BYTES = 16 * 1024
"""Largest PATCH body accepted (bytes). A browser's trickle fragment with every candidate of a host is under
2 KiB."""

MULTIPART_TYPE = "multipart/form-data"
"""Content type of an offer with a session configuration (OpenAI's ``POST /v1/realtime/calls``, RFC 7578): a
part ``sdp`` (the offer) and a part ``session`` (a JSON object)."""

MAX_SESSION_BYTES = 16 * 1024
"""Largest ``session`` part accepted (bytes), at the edge and at the transceiver: OpenAI's session object with
instructions and a few tool definitions."""

MAX_CALL_BYTES = MAX_OFFER_BYTES + MAX_SESSION_BYTES + 4096
"""Largest multipart offer body (bytes): both parts at their limits, and room for the part headers."""

CALL_TYPE = "application/json"
"""Content type of an offer with a session configuration on the signaling hop (edge to transceiver):
``{"sdp": <offer>, "session": <object>}``. Without a session configuration the hop carries the SDP alone."""

MAX_FORWARDED_CALL_BYTES = 6 * MAX_CALL_BYTES
"""Largest CALL_TYPE body a transceiver reads (bytes): JSON escapes a character in at most 6."""
