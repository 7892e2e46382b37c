from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class Codec(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODEC_UNSPECIFIED: _ClassVar[Codec]
    CODEC_OPUS: _ClassVar[Codec]
    CODEC_PCM16: _ClassVar[Codec]

class Event(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_UNSPECIFIED: _ClassVar[Event]
    EVENT_SPEECH_STARTED: _ClassVar[Event]
    EVENT_SPEECH_STOPPED: _ClassVar[Event]
    EVENT_INTERRUPT: _ClassVar[Event]
    EVENT_RESPONSE_STARTED: _ClassVar[Event]
    EVENT_RESPONSE_DONE: _ClassVar[Event]
CODEC_UNSPECIFIED: Codec
CODEC_OPUS: Codec
CODEC_PCM16: Codec
EVENT_UNSPECIFIED: Event
EVENT_SPEECH_STARTED: Event
EVENT_SPEECH_STOPPED: Event
EVENT_INTERRUPT: Event
EVENT_RESPONSE_STARTED: Event
EVENT_RESPONSE_DONE: Event

class SessionStart(_message.Message):
    __slots__ = ("stream_id", "session_id", "codec", "sample_rate_hz", "channels", "frame_ms", "metadata", "traceparent")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FRAME_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    session_id: str
    codec: Codec
    sample_rate_hz: int
    channels: int
    frame_ms: int
    metadata: _containers.ScalarMap[str, str]
    traceparent: str
    def __init__(self, stream_id: int | None = ..., session_id: str | None = ..., codec: Codec | str | None = ..., sample_rate_hz: int | None = ..., channels: int | None = ..., frame_ms: int | None = ..., metadata: _Mapping[str, str] | None = ..., traceparent: str | None = ...) -> None: ...

class AudioFrame(_message.Message):
    __slots__ = ("stream_id", "seq", "timestamp", "payload")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    seq: int
    timestamp: int
    payload: bytes
    def __init__(self, stream_id: int | None = ..., seq: int | None = ..., timestamp: int | None = ..., payload: bytes | None = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ("stream_id", "reason")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    reason: str
    def __init__(self, stream_id: int | None = ..., reason: str | None = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("stream_id", "event", "timestamp")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    event: Event
    timestamp: int
    def __init__(self, stream_id: int | None = ..., event: Event | str | None = ..., timestamp: int | None = ...) -> None: ...

class Uplink(_message.Message):
    __slots__ = ("starts", "frames", "ends", "events")
    STARTS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[SessionStart]
    frames: _containers.RepeatedCompositeFieldContainer[AudioFrame]
    ends: _containers.RepeatedCompositeFieldContainer[SessionEnd]
    events: _containers.RepeatedCompositeFieldContainer[SessionEvent]
    def __init__(self, starts: _Iterable[SessionStart | _Mapping] | None = ..., frames: _Iterable[AudioFrame | _Mapping] | None = ..., ends: _Iterable[SessionEnd | _Mapping] | None = ..., events: _Iterable[SessionEvent | _Mapping] | None = ...) -> None: ...

class Downlink(_message.Message):
    __slots__ = ("frames", "ends", "events")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[AudioFrame]
    ends: _containers.RepeatedCompositeFieldContainer[SessionEnd]
    events: _containers.RepeatedCompositeFieldContainer[SessionEvent]
    def __init__(self, frames: _Iterable[AudioFrame | _Mapping] | None = ..., ends: _Iterable[SessionEnd | _Mapping] | None = ..., events: _Iterable[SessionEvent | _Mapping] | None = ...) -> None: ...
