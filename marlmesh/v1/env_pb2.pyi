from marlmesh.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Space(_message.Message):
    __slots__ = ("kind", "n", "shape", "low", "high", "dtype")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Space.Kind]
        DISCRETE: _ClassVar[Space.Kind]
        BOX: _ClassVar[Space.Kind]
    KIND_UNSPECIFIED: Space.Kind
    DISCRETE: Space.Kind
    BOX: Space.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    kind: Space.Kind
    n: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    low: _containers.RepeatedScalarFieldContainer[float]
    high: _containers.RepeatedScalarFieldContainer[float]
    dtype: str
    def __init__(self, kind: _Optional[_Union[Space.Kind, str]] = ..., n: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., low: _Optional[_Iterable[float]] = ..., high: _Optional[_Iterable[float]] = ..., dtype: _Optional[str] = ...) -> None: ...

class AgentSpec(_message.Message):
    __slots__ = ("index", "name", "observation_space", "action_space")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_SPACE_FIELD_NUMBER: _ClassVar[int]
    ACTION_SPACE_FIELD_NUMBER: _ClassVar[int]
    index: int
    name: str
    observation_space: Space
    action_space: Space
    def __init__(self, index: _Optional[int] = ..., name: _Optional[str] = ..., observation_space: _Optional[_Union[Space, _Mapping]] = ..., action_space: _Optional[_Union[Space, _Mapping]] = ...) -> None: ...

class EnvSpec(_message.Message):
    __slots__ = ("env_name", "num_envs", "agents", "has_positions", "has_collisions", "instance_id")
    ENV_NAME_FIELD_NUMBER: _ClassVar[int]
    NUM_ENVS_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    HAS_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    HAS_COLLISIONS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    env_name: str
    num_envs: int
    agents: _containers.RepeatedCompositeFieldContainer[AgentSpec]
    has_positions: bool
    has_collisions: bool
    instance_id: str
    def __init__(self, env_name: _Optional[str] = ..., num_envs: _Optional[int] = ..., agents: _Optional[_Iterable[_Union[AgentSpec, _Mapping]]] = ..., has_positions: _Optional[bool] = ..., has_collisions: _Optional[bool] = ..., instance_id: _Optional[str] = ...) -> None: ...

class ChannelState(_message.Message):
    __slots__ = ("positions", "live_agents")
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    positions: _tensor_pb2.Tensor
    live_agents: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, positions: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., live_agents: _Optional[_Iterable[int]] = ...) -> None: ...

class Observation(_message.Message):
    __slots__ = ("tick", "obs", "reward", "terminated", "truncated", "final_obs", "cost", "channel")
    TICK_FIELD_NUMBER: _ClassVar[int]
    OBS_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FINAL_OBS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    tick: int
    obs: _tensor_pb2.Tensor
    reward: _tensor_pb2.Tensor
    terminated: _tensor_pb2.Tensor
    truncated: _tensor_pb2.Tensor
    final_obs: _tensor_pb2.Tensor
    cost: _tensor_pb2.Tensor
    channel: ChannelState
    def __init__(self, tick: _Optional[int] = ..., obs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., reward: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., terminated: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., truncated: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., final_obs: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., cost: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., channel: _Optional[_Union[ChannelState, _Mapping]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("agent_index", "process_id")
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROCESS_ID_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    process_id: str
    def __init__(self, agent_index: _Optional[int] = ..., process_id: _Optional[str] = ...) -> None: ...

class JoinResponse(_message.Message):
    __slots__ = ("spec", "observation")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    spec: EnvSpec
    observation: Observation
    def __init__(self, spec: _Optional[_Union[EnvSpec, _Mapping]] = ..., observation: _Optional[_Union[Observation, _Mapping]] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("agent_index", "tick", "action")
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    TICK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    tick: int
    action: _tensor_pb2.Tensor
    def __init__(self, agent_index: _Optional[int] = ..., tick: _Optional[int] = ..., action: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("observation", "action_applied")
    OBSERVATION_FIELD_NUMBER: _ClassVar[int]
    ACTION_APPLIED_FIELD_NUMBER: _ClassVar[int]
    observation: Observation
    action_applied: bool
    def __init__(self, observation: _Optional[_Union[Observation, _Mapping]] = ..., action_applied: _Optional[bool] = ...) -> None: ...

class LeaveRequest(_message.Message):
    __slots__ = ("agent_index",)
    AGENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    agent_index: int
    def __init__(self, agent_index: _Optional[int] = ...) -> None: ...

class LeaveResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSpecRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("episodes_from", "max_episodes")
    EPISODES_FROM_FIELD_NUMBER: _ClassVar[int]
    MAX_EPISODES_FIELD_NUMBER: _ClassVar[int]
    episodes_from: int
    max_episodes: int
    def __init__(self, episodes_from: _Optional[int] = ..., max_episodes: _Optional[int] = ...) -> None: ...

class EpisodeStat(_message.Message):
    __slots__ = ("seq", "env_index", "end_tick", "agent_returns", "return_sum", "length", "collisions")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ENV_INDEX_FIELD_NUMBER: _ClassVar[int]
    END_TICK_FIELD_NUMBER: _ClassVar[int]
    AGENT_RETURNS_FIELD_NUMBER: _ClassVar[int]
    RETURN_SUM_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    COLLISIONS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    env_index: int
    end_tick: int
    agent_returns: _containers.RepeatedScalarFieldContainer[float]
    return_sum: float
    length: int
    collisions: float
    def __init__(self, seq: _Optional[int] = ..., env_index: _Optional[int] = ..., end_tick: _Optional[int] = ..., agent_returns: _Optional[_Iterable[float]] = ..., return_sum: _Optional[float] = ..., length: _Optional[int] = ..., collisions: _Optional[float] = ...) -> None: ...

class EnvStats(_message.Message):
    __slots__ = ("tick", "env_steps", "episodes", "recent", "default_actions", "late_actions", "live_agents", "steps_per_second")
    class DefaultActionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    class LateActionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: int
        def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
    TICK_FIELD_NUMBER: _ClassVar[int]
    ENV_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPISODES_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LATE_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LIVE_AGENTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    tick: int
    env_steps: int
    episodes: int
    recent: _containers.RepeatedCompositeFieldContainer[EpisodeStat]
    default_actions: _containers.ScalarMap[int, int]
    late_actions: _containers.ScalarMap[int, int]
    live_agents: _containers.RepeatedScalarFieldContainer[int]
    steps_per_second: float
    def __init__(self, tick: _Optional[int] = ..., env_steps: _Optional[int] = ..., episodes: _Optional[int] = ..., recent: _Optional[_Iterable[_Union[EpisodeStat, _Mapping]]] = ..., default_actions: _Optional[_Mapping[int, int]] = ..., late_actions: _Optional[_Mapping[int, int]] = ..., live_agents: _Optional[_Iterable[int]] = ..., steps_per_second: _Optional[float] = ...) -> None: ...
