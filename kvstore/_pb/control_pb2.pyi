from kvstore._pb import kvstore_pb2 as _kvstore_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnableAuth(_message.Message):
    __slots__ = ("token_secret",)
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    token_secret: bytes
    def __init__(self, token_secret: _Optional[bytes] = ...) -> None: ...

class AddUser(_message.Message):
    __slots__ = ("name", "password_hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    password_hash: str
    def __init__(self, name: _Optional[str] = ..., password_hash: _Optional[str] = ...) -> None: ...

class ChangePassword(_message.Message):
    __slots__ = ("name", "password_hash")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    name: str
    password_hash: str
    def __init__(self, name: _Optional[str] = ..., password_hash: _Optional[str] = ...) -> None: ...

class ControlCommand(_message.Message):
    __slots__ = ("enable_auth", "disable_auth", "add_user", "delete_user", "change_password", "grant_role", "revoke_role", "set_user_rate_limit", "add_role", "delete_role", "grant_permission", "revoke_permission", "set_role_rate_limit", "raise_alarm", "clear_alarm")
    ENABLE_AUTH_FIELD_NUMBER: _ClassVar[int]
    DISABLE_AUTH_FIELD_NUMBER: _ClassVar[int]
    ADD_USER_FIELD_NUMBER: _ClassVar[int]
    DELETE_USER_FIELD_NUMBER: _ClassVar[int]
    CHANGE_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    GRANT_ROLE_FIELD_NUMBER: _ClassVar[int]
    REVOKE_ROLE_FIELD_NUMBER: _ClassVar[int]
    SET_USER_RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ADD_ROLE_FIELD_NUMBER: _ClassVar[int]
    DELETE_ROLE_FIELD_NUMBER: _ClassVar[int]
    GRANT_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    REVOKE_PERMISSION_FIELD_NUMBER: _ClassVar[int]
    SET_ROLE_RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RAISE_ALARM_FIELD_NUMBER: _ClassVar[int]
    CLEAR_ALARM_FIELD_NUMBER: _ClassVar[int]
    enable_auth: EnableAuth
    disable_auth: _kvstore_pb2.AuthDisableRequest
    add_user: AddUser
    delete_user: _kvstore_pb2.UserDeleteRequest
    change_password: ChangePassword
    grant_role: _kvstore_pb2.UserGrantRoleRequest
    revoke_role: _kvstore_pb2.UserRevokeRoleRequest
    set_user_rate_limit: _kvstore_pb2.UserSetRateLimitRequest
    add_role: _kvstore_pb2.RoleAddRequest
    delete_role: _kvstore_pb2.RoleDeleteRequest
    grant_permission: _kvstore_pb2.RoleGrantPermissionRequest
    revoke_permission: _kvstore_pb2.RoleRevokePermissionRequest
    set_role_rate_limit: _kvstore_pb2.RoleSetRateLimitRequest
    raise_alarm: _kvstore_pb2.Alarm
    clear_alarm: _kvstore_pb2.Alarm
    def __init__(self, enable_auth: _Optional[_Union[EnableAuth, _Mapping]] = ..., disable_auth: _Optional[_Union[_kvstore_pb2.AuthDisableRequest, _Mapping]] = ..., add_user: _Optional[_Union[AddUser, _Mapping]] = ..., delete_user: _Optional[_Union[_kvstore_pb2.UserDeleteRequest, _Mapping]] = ..., change_password: _Optional[_Union[ChangePassword, _Mapping]] = ..., grant_role: _Optional[_Union[_kvstore_pb2.UserGrantRoleRequest, _Mapping]] = ..., revoke_role: _Optional[_Union[_kvstore_pb2.UserRevokeRoleRequest, _Mapping]] = ..., set_user_rate_limit: _Optional[_Union[_kvstore_pb2.UserSetRateLimitRequest, _Mapping]] = ..., add_role: _Optional[_Union[_kvstore_pb2.RoleAddRequest, _Mapping]] = ..., delete_role: _Optional[_Union[_kvstore_pb2.RoleDeleteRequest, _Mapping]] = ..., grant_permission: _Optional[_Union[_kvstore_pb2.RoleGrantPermissionRequest, _Mapping]] = ..., revoke_permission: _Optional[_Union[_kvstore_pb2.RoleRevokePermissionRequest, _Mapping]] = ..., set_role_rate_limit: _Optional[_Union[_kvstore_pb2.RoleSetRateLimitRequest, _Mapping]] = ..., raise_alarm: _Optional[_Union[_kvstore_pb2.Alarm, _Mapping]] = ..., clear_alarm: _Optional[_Union[_kvstore_pb2.Alarm, _Mapping]] = ...) -> None: ...

class StoredUser(_message.Message):
    __slots__ = ("name", "password_hash", "roles", "rate_limit", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_HASH_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    password_hash: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    rate_limit: _kvstore_pb2.RateLimit
    revision: int
    def __init__(self, name: _Optional[str] = ..., password_hash: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., rate_limit: _Optional[_Union[_kvstore_pb2.RateLimit, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class StoredRole(_message.Message):
    __slots__ = ("name", "permissions", "rate_limit")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    permissions: _containers.RepeatedCompositeFieldContainer[_kvstore_pb2.KeyPermission]
    rate_limit: _kvstore_pb2.RateLimit
    def __init__(self, name: _Optional[str] = ..., permissions: _Optional[_Iterable[_Union[_kvstore_pb2.KeyPermission, _Mapping]]] = ..., rate_limit: _Optional[_Union[_kvstore_pb2.RateLimit, _Mapping]] = ...) -> None: ...

class ControlState(_message.Message):
    __slots__ = ("revision", "auth_enabled", "token_secret", "users", "roles", "alarms")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    AUTH_ENABLED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_SECRET_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    revision: int
    auth_enabled: bool
    token_secret: bytes
    users: _containers.RepeatedCompositeFieldContainer[StoredUser]
    roles: _containers.RepeatedCompositeFieldContainer[StoredRole]
    alarms: _containers.RepeatedCompositeFieldContainer[_kvstore_pb2.Alarm]
    def __init__(self, revision: _Optional[int] = ..., auth_enabled: _Optional[bool] = ..., token_secret: _Optional[bytes] = ..., users: _Optional[_Iterable[_Union[StoredUser, _Mapping]]] = ..., roles: _Optional[_Iterable[_Union[StoredRole, _Mapping]]] = ..., alarms: _Optional[_Iterable[_Union[_kvstore_pb2.Alarm, _Mapping]]] = ...) -> None: ...
