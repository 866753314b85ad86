from kvstore._pb import kvstore_pb2 as _kvstore_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogCommand(_message.Message):
    __slots__ = ("put", "delete", "txn")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    put: _kvstore_pb2.PutRequest
    delete: _kvstore_pb2.DeleteRequest
    txn: _kvstore_pb2.TxnRequest
    def __init__(self, put: _Optional[_Union[_kvstore_pb2.PutRequest, _Mapping]] = ..., delete: _Optional[_Union[_kvstore_pb2.DeleteRequest, _Mapping]] = ..., txn: _Optional[_Union[_kvstore_pb2.TxnRequest, _Mapping]] = ...) -> None: ...

class LogResponse(_message.Message):
    __slots__ = ("put", "delete", "txn")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    put: _kvstore_pb2.PutResponse
    delete: _kvstore_pb2.DeleteResponse
    txn: _kvstore_pb2.TxnResponse
    def __init__(self, put: _Optional[_Union[_kvstore_pb2.PutResponse, _Mapping]] = ..., delete: _Optional[_Union[_kvstore_pb2.DeleteResponse, _Mapping]] = ..., txn: _Optional[_Union[_kvstore_pb2.TxnResponse, _Mapping]] = ...) -> None: ...
