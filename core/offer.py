"""Checks and trims a WHIP offer before the transceiver answers it (sans-IO).

The transceiver answers only what it can carry through an edge relay: one
BUNDLE group (RFC 9143) with an audio m-line that offers Opus. The client's
candidates and ``a=end-of-candidates`` are removed: kept candidates would let
ICE find a direct path past the relay, and a kept end-of-candidates makes
aioice prune the only component and kill the session before it starts.
"""

from __future__ import annotations

from aiortc import sdp


class OfferRejected(ValueError):
    """The offer cannot be answered. ``title`` is a stable problem title (RFC 9457 3.1.3)."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail


def check_offer(offer: str) -> str:
    """Validate an SDP offer (RFC 8866, RFC 8829) and return it without client candidates.

    Raises OfferRejected with title ``malformed-sdp``, ``no-audio``,
    ``no-bundle``, ``no-opus`` or ``no-ice-credentials``.
    """
    if not offer.startswith("v=0"):
        raise OfferRejected("malformed-sdp", "the body is not an SDP offer: it must start with 'v=0'")
    try:
        description = sdp.SessionDescription.parse(offer)
    except Exception as exc:  # aiortc's parser raises many types on garbage
        raise OfferRejected("malformed-sdp", f"the SDP offer could not be parsed: {exc}") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio or all(m.port == 0 for m in audio):
        raise OfferRejected("no-audio", "the offer has no active audio m-line")
    bundles = [g for g in description.group if g.semantic == "BUNDLE"]
    mids = {str(m.rtp.muxId) for m in description.media if m.port != 0}
    if not bundles or not mids <= {str(i) for i in bundles[0].items}:
        raise OfferRejected(
            "no-bundle", "the offer must BUNDLE all its m-lines in one group (a=group:BUNDLE, RFC 9143)"
        )
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise OfferRejected("no-opus", "the offer's audio m-line does not offer Opus (RFC 7587)")
    if not all(m.ice.usernameFragment and m.ice.password and m.dtls for m in description.media if m.port):
        raise OfferRejected("no-ice-credentials", "every m-line needs a=ice-ufrag, a=ice-pwd and a=fingerprint")
    return strip_candidates(offer)


def strip_candidates(offer: str) -> str:
    """Remove ``a=candidate:`` and ``a=end-of-candidates`` lines, keeping line endings."""
    return "".join(
        line for line in offer.splitlines(keepends=True)
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )
