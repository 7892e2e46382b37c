from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

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
    __slots__ = ("stream_id", "session_id", "codec", "sample_rate_hz", "channels", "frame_ms", "metadata", "traceparent", "resumed", "session_config")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FRAME_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    SESSION_CONFIG_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    session_id: str
    codec: Codec
    sample_rate_hz: int
    channels: int
    frame_ms: int
    metadata: _containers.ScalarMap[str, str]
    traceparent: str
    resumed: bool
    session_config: str
    def __init__(self, stream_id: _Optional[int] = ..., session_id: _Optional[str] = ..., codec: _Optional[_Union[Codec, str]] = ..., sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., frame_ms: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ..., traceparent: _Optional[str] = ..., resumed: _Optional[bool] = ..., session_config: _Optional[str] = ...) -> None: ...

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
    def __init__(self, stream_id: _Optional[int] = ..., seq: _Optional[int] = ..., timestamp: _Optional[int] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ("stream_id", "reason")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    reason: str
    def __init__(self, stream_id: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("stream_id", "event", "timestamp")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    event: Event
    timestamp: int
    def __init__(self, stream_id: _Optional[int] = ..., event: _Optional[_Union[Event, str]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class JsonEvent(_message.Message):
    __slots__ = ("stream_id", "json")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    stream_id: int
    json: str
    def __init__(self, stream_id: _Optional[int] = ..., json: _Optional[str] = ...) -> None: ...

class Uplink(_message.Message):
    __slots__ = ("starts", "frames", "ends", "events", "json_events")
    STARTS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    JSON_EVENTS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedCompositeFieldContainer[SessionStart]
    frames: _containers.RepeatedCompositeFieldContainer[AudioFrame]
    ends: _containers.RepeatedCompositeFieldContainer[SessionEnd]
    events: _containers.RepeatedCompositeFieldContainer[SessionEvent]
    json_events: _containers.RepeatedCompositeFieldContainer[JsonEvent]
    def __init__(self, starts: _Optional[_Iterable[_Union[SessionStart, _Mapping]]] = ..., frames: _Optional[_Iterable[_Union[AudioFrame, _Mapping]]] = ..., ends: _Optional[_Iterable[_Union[SessionEnd, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[SessionEvent, _Mapping]]] = ..., json_events: _Optional[_Iterable[_Union[JsonEvent, _Mapping]]] = ...) -> None: ...

class Downlink(_message.Message):
    __slots__ = ("frames", "ends", "events", "json_events")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    JSON_EVENTS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[AudioFrame]
    ends: _containers.RepeatedCompositeFieldContainer[SessionEnd]
    events: _containers.RepeatedCompositeFieldContainer[SessionEvent]
    json_events: _containers.RepeatedCompositeFieldContainer[JsonEvent]
    def __init__(self, frames: _Optional[_Iterable[_Union[AudioFrame, _Mapping]]] = ..., ends: _Optional[_Iterable[_Union[SessionEnd, _Mapping]]] = ..., events: _Optional[_Iterable[_Union[SessionEvent, _Mapping]]] = ..., json_events: _Optional[_Iterable[_Union[JsonEvent, _Mapping]]] = ...) -> None: ...
