"""kcp: netcat for Kafka/Avro, for astronomical alert streams.

The library does the whole job without the command line::

    from kcp import Options, plan
    plan(["ztf_20180725_programid1"], "night.avro", Options(count=100)).execute()

:func:`plan` assembles a run from addresses (the grammar of ``kcp --help``), :class:`Options`
and an :class:`Environment` (stdin, stdout and whether they are terminals, by default this
process's); ``execute`` returns a :class:`Summary`.
"""

from __future__ import annotations

import logging

from .address import Address
from .codec import Schema, SchemaStore, load_schema_path
from .config import Config
from .environment import Environment
from .errors import BadInput, ExitStatus, KcpError, TransportError, UsageError
from .formats import FORMATS
from .message import Message
from .options import Options
from .pipeline import CallbackSink, Summary
from .plan import Run, describe_topics, group_lag, plan, schema_census
from .transports import TRANSPORTS

__version__ = "0.1.0"

logging.getLogger("kcp").addHandler(logging.NullHandler())

__all__ = [
    "FORMATS", "TRANSPORTS", "Address", "BadInput", "CallbackSink", "Config", "Environment",
    "ExitStatus", "KcpError", "Message", "Options", "Run", "Schema", "SchemaStore", "Summary",
    "TransportError", "UsageError", "__version__", "describe_topics", "group_lag",
    "load_schema_path", "plan", "schema_census",
]
