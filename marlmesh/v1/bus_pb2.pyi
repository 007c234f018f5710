from marlmesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("wire_version", "src", "dst", "channel", "tick", "round", "seq", "sent_at", "payload", "bus_time", "visible_at")
    WIRE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BUS_TIME_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_AT_FIELD_NUMBER: _ClassVar[int]
    wire_version: int
    src: int
    dst: int
    channel: str
    tick: int
    round: int
    seq: int
    sent_at: float
    payload: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    bus_time: float
    visible_at: _tensor_pb2.Tensor
    def __init__(self, wire_version: _Optional[int] = ..., src: _Optional[int] = ..., dst: _Optional[int] = ..., channel: _Optional[str] = ..., tick: _Optional[int] = ..., round: _Optional[int] = ..., seq: _Optional[int] = ..., sent_at: _Optional[float] = ..., payload: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ..., bus_time: _Optional[float] = ..., visible_at: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...
