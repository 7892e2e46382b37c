"""Checks and trims a WHIP offer before the transceiver answers it, and reads and writes the SDP fragments of
WHIP's PATCH (sans-IO).

The transceiver answers only what it can carry through an edge relay: one
BUNDLE group (RFC 9143) with an audio m-line that offers Opus. The client's
candidates and ``a=end-of-candidates`` are removed: kept candidates would let
ICE find a direct path past the relay, and a kept end-of-candidates makes
aioice prune the only component and kill the session before it starts.

Before aiortc parses anything, ``check_limits`` bounds what an offer may make
the transceiver build: m-lines, lines, attributes per section, line length.

A PATCH (RFC 9725 4.3) carries an ``application/trickle-ice-sdpfrag`` (RFC 8840): the caller's ICE
credentials, and for trickle ICE its candidates, which the transceiver does not need (it takes the
caller's address from its first check through the relay), or for an ICE restart new credentials.
``parse_sdpfrag`` reads one, ``restart_answer`` writes the answer to a restart.

``limit_opus_rates`` tells the caller, in the answer, the audio bandwidth the transceiver uses when it
decodes for the agent itself (PCM16): RFC 7587's ``maxplaybackrate`` and ``sprop-maxcapturerate``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import accumulate
from typing import NamedTuple

from aioice.candidate import candidate_foundation
from aiortc import sdp


class OfferRejected(ValueError):
    """The offer cannot be answered. ``title`` is a stable problem title (RFC 9457 3.1.3)."""

    def __init__(self, title: str, detail: str) -> None:
        super().__init__(detail)
        self.title = title
        self.detail = detail


MEDIA_KINDS = ("audio", "application")
"""The m-line media an offer may carry, at most one of each: the call's audio, and a data channel."""

MAX_M_LINES = len(MEDIA_KINDS)
MAX_LINES = 256
"""Lines in a whole offer. A browser's audio offer has 30 to 60, with a data channel and many candidates
under 150."""

MAX_ATTRIBUTES = 128
"""``a=`` lines in one section (the session section or one m-line's)."""

MAX_LINE_CHARS = 1024
"""Characters in one line (without its line ending). The longest in browser offers, a=fingerprint with
SHA-512, has about 210."""


def check_limits(offer: str) -> None:
    """Bound an offer's size in SDP terms (RFC 8866 5) before it is parsed; cheap checks first.

    Raises OfferRejected with title ``too-many-m-lines`` (over MAX_M_LINES, or
    two m-lines of one media), ``too-many-lines`` (over MAX_LINES),
    ``line-too-long`` (over MAX_LINE_CHARS), ``malformed-sdp`` (a line that is
    not ``<type>=<value>`` with a lowercase letter type, RFC 8866 5) or
    ``too-many-attributes`` (over MAX_ATTRIBUTES in one section).
    """
    m_lines = offer.count("\nm=")
    if m_lines > MAX_M_LINES:
        raise OfferRejected("too-many-m-lines", f"the offer has {m_lines} m-lines; at most {MAX_M_LINES} are answered"
                                                f" (one each of {', '.join(MEDIA_KINDS)})")
    lines = offer.count("\n") + 1
    if lines > MAX_LINES:
        raise OfferRejected("too-many-lines", f"the offer has {lines} lines; the limit is {MAX_LINES}")
    kinds: list[str] = []
    attributes = 0
    for line in offer.split("\n"):
        line = line.removesuffix("\r")
        if len(line) > MAX_LINE_CHARS:
            raise OfferRejected("line-too-long", f"an offer line has {len(line)} characters; the limit is {MAX_LINE_CHARS}")
        if line and not (line[1:2] == "=" and "a" <= line[0] <= "z"):
            raise OfferRejected("malformed-sdp", f"an offer line is not <type>=<value> (RFC 8866 5): {line[:40]!r}")
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            if kind in kinds:
                raise OfferRejected("too-many-m-lines", f"the offer has more than one {kind} m-line")
            kinds.append(kind)
            attributes = 0
        elif line.startswith("a="):
            attributes += 1
            if attributes > MAX_ATTRIBUTES:
                raise OfferRejected("too-many-attributes",
                                    f"a section of the offer has over {MAX_ATTRIBUTES} attribute lines")


class CheckedOffer(NamedTuple):
    """An offer that passed ``check_offer``: ``sdp``, its text without client candidates, and ``description``,
    that text as aiortc parsed it (read it, do not change it)."""

    sdp: str
    description: sdp.SessionDescription


def check_offer(offer: str) -> CheckedOffer:
    """Validate an SDP offer (RFC 8866, RFC 8829) and return it without client candidates, parsed once.

    Raises OfferRejected with a title from ``check_limits``, or
    ``malformed-sdp``, ``no-audio``, ``unsupported-m-line`` (media other than
    MEDIA_KINDS), ``no-bundle``, ``no-opus`` or ``no-ice-credentials``.
    """
    if not offer.startswith("v=0"):
        raise OfferRejected("malformed-sdp", "the body is not an SDP offer: it must start with 'v=0'")
    check_limits(offer)
    stripped = strip_candidates(offer)
    try:
        description = sdp.SessionDescription.parse(stripped)
    except Exception as exc:  # aiortc's parser raises many types on garbage
        raise OfferRejected("malformed-sdp", f"the SDP offer could not be parsed: {exc}") from None
    audio = [m for m in description.media if m.kind == "audio"]
    if not audio or all(m.port == 0 for m in audio):
        raise OfferRejected("no-audio", "the offer has no active audio m-line")
    if any(m.kind not in MEDIA_KINDS for m in description.media):
        raise OfferRejected("unsupported-m-line", f"the offer may carry only {' and '.join(MEDIA_KINDS)} m-lines")
    bundles = [g for g in description.group if g.semantic == "BUNDLE"]
    mids = {str(m.rtp.muxId) for m in description.media if m.port != 0}
    if not bundles or not mids <= {str(i) for i in bundles[0].items}:
        raise OfferRejected(
            "no-bundle", "the offer must BUNDLE all its m-lines in one group (a=group:BUNDLE, RFC 9143)"
        )
    if not any(c.mimeType.lower() == "audio/opus" for m in audio for c in m.rtp.codecs):
        raise OfferRejected("no-opus", "the offer's audio m-line does not offer Opus (RFC 7587)")
    if not all(m.ice and m.ice.usernameFragment and m.ice.password and m.dtls for m in description.media if m.port):
        raise OfferRejected("no-ice-credentials", "every m-line needs a=ice-ufrag, a=ice-pwd and a=fingerprint")
    return CheckedOffer(stripped, description)


def strip_candidates(offer: str) -> str:
    """Remove ``a=candidate:`` and ``a=end-of-candidates`` lines, keeping line endings."""
    return "".join(
        line for line in offer.splitlines(keepends=True)
        if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


TCP_PASSIVE_PRIORITY = (126 << 24) | ((4 << 13 | 8191) << 8) | 255
"""Priority of the ICE-TCP candidate (RFC 8445 5.1.2.1 with RFC 6544 4.2: host, local preference
(2^13 x 4 for passive) + 8191, component 1): 2124414975, below aioice's UDP host candidate (2130706431),
so a caller whose UDP works keeps it."""


def tcp_candidate(relay_tcp: tuple[str, int]) -> str:
    """The ``a=candidate`` value (RFC 8839 5.1) of the RFC 6544 passive TCP host candidate on ``relay_tcp``
    (the edge's ICE-TCP address, (host, port)). Raises ValueError for a port outside 1..65535."""
    host, port = relay_tcp
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"ICE-TCP port must be in 1..65535, got {port}")
    return f"{candidate_foundation('host', 'tcp', host)} 1 tcp {TCP_PASSIVE_PRIORITY} {host} {port} typ host tcptype passive"


def add_tcp_candidate(answer: str, relay_tcp: tuple[str, int]) -> str:
    """The answer with an RFC 6544 passive TCP host candidate on ``relay_tcp`` (the edge's ICE-TCP address,
    (host, port)) after the last ``a=candidate:`` line of every m-section that has one (the UDP candidate
    comes first; ``a=end-of-candidates`` stays last). Sections without candidates are left alone. Line
    endings are kept. Raises ValueError for a port outside 1..65535."""
    line = "a=candidate:" + tcp_candidate(relay_tcp)
    lines = answer.splitlines(keepends=True)
    out: list[str] = []
    for i, current in enumerate(lines):
        out.append(current)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if current.startswith("a=candidate:") and not following.startswith("a=candidate:"):
            ending = current[len(current.rstrip("\r\n")):]
            if not ending:  # the answer's last line
                out[-1] += "\r\n"
            out.append(line + ending)
    return "".join(out)


OPUS_FMTP_RATES_HZ = (8000, 48000)
"""The range of ``maxplaybackrate`` and ``sprop-maxcapturerate`` (RFC 7587 6.1), Hz."""
_OPUS_RTPMAP = re.compile(r"a=rtpmap:(\d+) opus/48000(/2)?\s*$", re.IGNORECASE)
_OPUS_RATE_PARAMS = ("maxplaybackrate", "sprop-maxcapturerate")


def limit_opus_rates(answer: str, rate_hz: int) -> str:
    """The answer with RFC 7587 6.1's ``maxplaybackrate`` and ``sprop-maxcapturerate`` set to ``rate_hz``
    on every Opus payload type (``a=rtpmap:<pt> opus/48000/2``): in the payload type's ``a=fmtp`` line,
    replacing any value these two had and keeping the other parameters, or in a new ``a=fmtp`` line after
    the rtpmap. The caller's encoder may then stop coding audio above ``rate_hz`` / 2 (RFC 7587 7.1;
    browsers cap the encoder's bandwidth, 16000 Hz giving wideband SILK), and knows the transceiver's own
    audio carries nothing above it. Line endings are kept; an answer without Opus is returned unchanged.
    Raises ValueError for a rate outside OPUS_FMTP_RATES_HZ."""
    low, high = OPUS_FMTP_RATES_HZ
    if not low <= rate_hz <= high:
        raise ValueError(f"an Opus playback rate must be {low}-{high} Hz (RFC 7587 6.1), got {rate_hz}")
    rates = f"maxplaybackrate={rate_hz};sprop-maxcapturerate={rate_hz}"
    lines = answer.splitlines(keepends=True)
    sections = list(accumulate(line.startswith("m=") for line in lines))  # each line's m-section, 0 = session
    rtpmaps = {(sections[i], m.group(1)): i for i, line in enumerate(lines)
               if (m := _OPUS_RTPMAP.match(line.rstrip("\r\n"))) is not None}
    for i, line in enumerate(lines):
        text = line.rstrip("\r\n")
        pt, _, params = text.removeprefix("a=fmtp:").partition(" ")
        if text.startswith("a=fmtp:") and rtpmaps.pop((sections[i], pt), None) is not None:
            kept = [p for p in params.split(";") if p.strip() and p.split("=", 1)[0].strip() not in _OPUS_RATE_PARAMS]
            lines[i] = f"a=fmtp:{pt} " + ";".join([*kept, rates]) + line[len(text):]
    for (_, pt), i in sorted(rtpmaps.items(), key=lambda item: -item[1]):  # no a=fmtp yet: one after the rtpmap
        ending = lines[i][len(lines[i].rstrip("\r\n")):]
        if not ending:  # the answer's last line
            lines[i] += "\r\n"
        lines.insert(i + 1, f"a=fmtp:{pt} {rates}{ending}")
    return "".join(lines)


_UFRAG = re.compile(r"[A-Za-z0-9+/]{4,256}")
_PWD = re.compile(r"[A-Za-z0-9+/]{22,256}")


@dataclass(frozen=True, slots=True)
class SdpFrag:
    """What a WHIP PATCH's fragment says: the caller's ICE ``ufrag`` and ``pwd``, the ``mids`` of its media
    sections, how many ``candidates`` it trickles, and whether it ends them (``end_of_candidates``)."""

    ufrag: str
    pwd: str
    mids: tuple[str, ...]
    candidates: int
    end_of_candidates: bool


def parse_sdpfrag(text: str) -> SdpFrag:
    """Read an ``application/trickle-ice-sdpfrag`` body (RFC 8840 4.4, 9; RFC 9725 4.3.1).

    ``a=ice-ufrag`` and ``a=ice-pwd`` may sit before the first ``m=`` line or in media sections, but must
    appear, once each or with one value throughout (RFC 8840 4.4). Raises OfferRejected with title
    ``malformed-sdpfrag`` (a line not ``<type>=<value>``, over MAX_LINES lines or MAX_LINE_CHARS
    characters, or an ``a=mid`` outside a media section), ``no-ice-credentials`` (ufrag or pwd missing or
    outside ICE's grammar, RFC 8839 5.4) or ``inconsistent-ice-credentials``.
    """
    lines = text.split("\n")
    if len(lines) > MAX_LINES:
        raise OfferRejected("malformed-sdpfrag", f"the fragment has {len(lines)} lines; the limit is {MAX_LINES}")
    ufrags: set[str] = set()
    pwds: set[str] = set()
    mids: list[str] = []
    in_media = False
    candidates = 0
    end = False
    for line in lines:
        line = line.removesuffix("\r")
        if not line:
            continue
        if len(line) > MAX_LINE_CHARS or line[1:2] != "=" or not "a" <= line[0] <= "z":
            raise OfferRejected("malformed-sdpfrag", f"a fragment line is not <type>=<value> (RFC 8866 5) of at most"
                                                     f" {MAX_LINE_CHARS} characters: {line[:40]!r}")
        if line.startswith("m="):
            in_media = True
        elif line.startswith("a=ice-ufrag:"):
            ufrags.add(line.removeprefix("a=ice-ufrag:").strip())
        elif line.startswith("a=ice-pwd:"):
            pwds.add(line.removeprefix("a=ice-pwd:").strip())
        elif line.startswith("a=mid:"):
            if not in_media:
                raise OfferRejected("malformed-sdpfrag", "a=mid outside a media section (RFC 8840 9)")
            mids.append(line.removeprefix("a=mid:").strip())
        elif line.startswith("a=candidate:"):
            candidates += 1
        elif line == "a=end-of-candidates":
            end = True
    if len(ufrags) > 1 or len(pwds) > 1:
        raise OfferRejected("inconsistent-ice-credentials", "the fragment names more than one ice-ufrag or ice-pwd")
    ufrag, pwd = next(iter(ufrags), ""), next(iter(pwds), "")
    if not _UFRAG.fullmatch(ufrag) or not _PWD.fullmatch(pwd):
        raise OfferRejected("no-ice-credentials", "a PATCH fragment needs a=ice-ufrag (4..256 ice-chars) and"
                                                  " a=ice-pwd (22..256 ice-chars), RFC 8839 5.4")
    return SdpFrag(ufrag, pwd, tuple(mids), candidates, end)


def restart_answer(ufrag: str, pwd: str, kind: str, mid: str, candidate: str) -> str:
    """The body of a ``200`` to an ICE restart (RFC 9725 4.3.3, RFC 8840 9): the server's new ``ufrag`` and
    ``pwd``, then the bundled media section ``kind`` with ``mid`` carrying its one ``candidate`` (an
    ``a=candidate`` value, RFC 8839 5.1) and end-of-candidates. Lines end in CRLF (RFC 8866 5)."""
    return "".join(f"{line}\r\n" for line in (
        f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", f"m={kind} 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{mid}",
        f"a=candidate:{candidate}", "a=end-of-candidates"))
