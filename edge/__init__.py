"""Edge PoP: the UDP relay routed by the token in the server ICE ufrag, and the WHIP front."""
