from marlmesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutFragment(_message.Message):
    __slots__ = ("agent_index", "fragment_id", "first_tick", "num_steps", "min_policy_version", "max_policy_version", "columns")
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    FRAGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_TICK_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    MIN_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    fragment_id: int
    first_tick: int
    num_steps: int
    min_policy_version: int
    max_policy_version: int
    columns: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    def __init__(self, agent_index: _Optional[int] = ..., fragment_id: _Optional[int] = ..., first_tick: _Optional[int] = ..., num_steps: _Optional[int] = ..., min_policy_version: _Optional[int] = ..., max_policy_version: _Optional[int] = ..., columns: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("accepted", "reason", "version")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    version: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class WatchWeightsRequest(_message.Message):
    __slots__ = ("agent_index", "have_version")
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    HAVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    have_version: int
    def __init__(self, agent_index: _Optional[int] = ..., have_version: _Optional[int] = ...) -> None: ...

class Weights(_message.Message):
    __slots__ = ("agent_index", "version", "params")
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    version: int
    params: _containers.RepeatedCompositeFieldContainer[_tensor_pb2.NamedTensor]
    def __init__(self, agent_index: _Optional[int] = ..., version: _Optional[int] = ..., params: _Optional[_Iterable[_Union[_tensor_pb2.NamedTensor, _Mapping]]] = ...) -> None: ...

class PolicyGraphsRequest(_message.Message):
    __slots__ = ("agent_index",)
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    def __init__(self, agent_index: _Optional[int] = ...) -> None: ...

class PolicyGraphs(_message.Message):
    __slots__ = ("agent_index", "rounds", "entry_json", "files")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_JSON_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    rounds: int
    entry_json: str
    files: _containers.ScalarMap[str, bytes]
    def __init__(self, agent_index: _Optional[int] = ..., rounds: _Optional[int] = ..., entry_json: _Optional[str] = ..., files: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class LearnerStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LearnerStatus(_message.Message):
    __slots__ = ("agent_index", "version", "updates", "samples_trained", "fragments_received", "fragments_dropped", "last_losses", "fragments_trained", "resumed_from_version", "checkpoints_corrupt", "updates_rejected")
    class FragmentsDroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LastLossesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class UpdatesRejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TRAINED_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOSSES_FIELD_NUMBER: _ClassVar[int]
    FRAGMENTS_TRAINED_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_CORRUPT_FIELD_NUMBER: _ClassVar[int]
    UPDATES_REJECTED_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    version: int
    updates: int
    samples_trained: int
    fragments_received: int
    fragments_dropped: _containers.ScalarMap[str, int]
    last_losses: _containers.ScalarMap[str, float]
    fragments_trained: int
    resumed_from_version: int
    checkpoints_corrupt: int
    updates_rejected: _containers.ScalarMap[str, int]
    def __init__(self, agent_index: _Optional[int] = ..., version: _Optional[int] = ..., updates: _Optional[int] = ..., samples_trained: _Optional[int] = ..., fragments_received: _Optional[int] = ..., fragments_dropped: _Optional[_Mapping[str, int]] = ..., last_losses: _Optional[_Mapping[str, float]] = ..., fragments_trained: _Optional[int] = ..., resumed_from_version: _Optional[int] = ..., checkpoints_corrupt: _Optional[int] = ..., updates_rejected: _Optional[_Mapping[str, int]] = ...) -> None: ...
