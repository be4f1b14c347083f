"""What the Kafka source, sink and admin calls share: broker settings from the config, and
errors librdkafka cannot retry away, explained in one line."""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from ...address import Address
from ...config import BrokerProfile, Config
from ...errors import TransportError
from ...options import Options

# librdkafka's own log lines go here: silent unless the CLI runs with --debug.
LOG = logging.getLogger("kcp.librdkafka")
NO_SUCH_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC,
                 KafkaError._UNKNOWN_PARTITION}
ACCESS_DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
                  KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._AUTHENTICATION,
                  KafkaError.SASL_AUTHENTICATION_FAILED}

# Delivery reports of records dropped by aborting their transaction.
ABORTED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

# The codes of a destination that cannot run transactions at all (ACLs, cluster settings).
_NO_TRANSACTIONS = {KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT,
                    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT, KafkaError.UNSUPPORTED_VERSION}
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


# What a client call that serves callbacks (poll, flush, transactions) raises when it fails.
CLIENT_FAILURES = (KafkaException, SystemError)


def raised_error(exc: Exception) -> KafkaError:
    """The KafkaError behind an exception of ``CLIENT_FAILURES``. confluent-kafka can leave a
    fatal error pending while it runs one more of kcp's callbacks; Python then raises a
    SystemError caused by that KafkaException. Anything else is not the client's: re-raised."""
    failure = exc if isinstance(exc, KafkaException) else exc.__cause__
    if not isinstance(failure, KafkaException):
        raise exc
    return failure.args[0]


def is_fenced(error: KafkaError) -> bool:
    """Whether a newer producer with the same transactional id took over."""
    return error.code() in _FENCED


def is_transaction_refusal(error: KafkaError) -> bool:
    """Whether ``error`` says this producer may not, or may no longer, run transactions."""
    return error.code() in _FENCED or (
        error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)


def transaction_failure(name: str, what: str, error: KafkaError, group: str | None) -> str:
    """One line saying why a transaction call failed, and what to check."""
    code = error.code()
    if code in _FENCED:
        return (f"broker {name}: this copier was fenced: another kcp with group {group} took "
                "over its partitions (its open transaction was aborted; nothing is lost)")
    if code in _NO_TRANSACTIONS:
        return (f"broker {name} cannot run transactions ({error.str()}): --exactly-once needs "
                f"a Write ACL on transactional ids kcp-{group}- (prefixed), IdempotentWrite on "
                "the cluster, and transaction.state.log.replication.factor / min.isr no larger "
                "than the brokers it has")
    return f"broker {name}: cannot {what} the transaction: {error.str()}"


# Broker names that are aliases of the config file (error messages differ for them).
_ALIASES: set[str] = set()
# What to check when a broker refuses a login, by broker name; else the SASL password's hint.
_LOGIN_HINTS: dict[str, str] = {}
_PASSWORD_HINT = "check sasl.mechanism, sasl.username and the password"
_OIDC_HINT = ("check sasl.oauthbearer.client.id, the client secret (client_secret_file or "
              "client_secret_env) and sasl.oauthbearer.token.endpoint.url")


def broker_profile(address: Address, options: Options, config: Config) -> BrokerProfile:
    """The address's broker: its profile, with the command line's -X properties on top."""
    profile = config.broker(address.broker)
    profile.properties.update(options.kafka_properties)
    if profile.name in config.brokers:
        _ALIASES.add(profile.name)
    mechanism = profile.properties.get("sasl.mechanism", profile.properties.get(
        "sasl.mechanisms", ""))
    if mechanism.upper() == "OAUTHBEARER":
        _LOGIN_HINTS[profile.name] = _OIDC_HINT
    return profile


class BrokerErrors(list[KafkaError]):
    """The errors retrying cannot cure, and whether every bootstrap address refused us (why the
    last one did, as librdkafka says it: "Connection refused", "Failed to resolve")."""

    unreachable: str | None = None


def fatal_errors(name: str, group: bool = True) -> tuple[dict, BrokerErrors]:
    """An ``error_cb`` that keeps errors which retrying cannot cure (bad credentials, TLS).

    ``group=False``: a reader without -g still has a (throw-away) group id, and librdkafka looks
    up its coordinator; a broker refusing that group is harmless, as kcp never uses it."""
    seen = BrokerErrors()
    refused: list[str] = []

    def error_cb(error: KafkaError) -> None:
        code = error.code()
        if not group and code == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return
        if code in (KafkaError._TRANSPORT, KafkaError._RESOLVE):
            refused.append(error.str())
        elif code == KafkaError._ALL_BROKERS_DOWN and refused:
            seen.unreachable = refused[-1]
        if error.fatal() or code in ACCESS_DENIED or code == KafkaError._SSL:
            seen.append(error)

    return {"error_cb": error_cb, "logger": LOG}, seen


def explain(name: str, error: KafkaError, topic: str | None = None,
            group: str | None = None) -> str:
    """One line for a broker error that retrying cannot cure: what is refused and what to check.

    librdkafka's texts never hold secrets (it masks sasl.password itself), and neither do ours.
    """
    code = error.code()
    if is_transaction_refusal(error):
        return transaction_failure(name, "use", error, group)
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return (f"not authorised for topic {topic or '(unnamed)'} on broker {name} "
                "(the broker has no ACL letting this user use it)")
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return (f"not authorised for consumer group {group or '(unnamed)'} on broker {name} "
                "(the broker has no ACL letting this user use it)")
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return f"not authorised by broker {name} ({error.str()})"
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        return (f"broker {name}: authentication failed ({error.str()}); "
                f"{_LOGIN_HINTS.get(name, _PASSWORD_HINT)}")
    if code == KafkaError._SSL:
        return (f"broker {name}: TLS failed ({error.str()}); check ssl.ca.location (the CA "
                "that signed the broker's certificate)")
    return f"broker {name}: {error.str()}"


def raise_fatal(name: str, seen: list[KafkaError], topic: str | None = None,
                 group: str | None = None) -> None:
    if seen:
        raise TransportError(explain(name, seen[0], topic, group))


def refused_topic(client: Any, name: str, topic: str, timeout: float) -> str | None:
    """Why ``topic``, missing from a broker's topic list, is hidden from us (an ACL), if it is."""
    with contextlib.suppress(KafkaException):
        found = client.list_topics(topic, timeout=min(timeout, 5.0)).topics.get(topic)
        if found is not None and found.error is not None and (
                found.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED):
            return explain(name, found.error, topic)
    return None


def absent_topic(client: Any, name: str, topic: str, timeout: float,
                 known: Iterable[str] = ()) -> str:
    """Why ``topic`` is missing from a broker's topic list: hidden by an ACL, or absent (with
    the nearest of the ``known`` topic names, a likely typo)."""
    refused = refused_topic(client, name, topic, timeout)
    if refused is not None:
        return refused
    near = difflib.get_close_matches(topic, [t for t in known if not t.startswith("__")], n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    return f"no such topic {topic!r} on broker {name}{hint} (kcp ls lists them)"


def topic_metadata(client: Any, name: str, topic: str | None, timeout: float,
                   seen: BrokerErrors) -> Any:
    deadline = time.monotonic() + timeout
    seen.unreachable = None  # a broker down earlier (and back since) is no reason to give up
    while True:
        try:
            # Short rounds: error_cb runs only when the client is polled, so bad credentials,
            # a refused certificate or a broker refusing connections end the wait at once
            # instead of after --timeout (which is for a broker slow to answer).
            return client.list_topics(topic, timeout=max(0.1, min(0.5, deadline
                                                                   - time.monotonic())))
        except KafkaException as exc:
            with contextlib.suppress(KafkaException, RuntimeError):
                client.poll(0)
            raise_fatal(name, seen, topic)
            if seen.unreachable is not None:
                raise TransportError(f"cannot reach broker {name}: {_reason(seen.unreachable)}"
                                     f"; {_reach_hint(name)}") from None
            if time.monotonic() < deadline:
                continue
            error = exc.args[0]
        reason = error.str() if isinstance(error, KafkaError) else str(error)
        raise TransportError(f"cannot reach broker {name} within {timeout:g}s ({reason}); "
                             f"{_reach_hint(name)}") from None


def _reason(text: str) -> str:
    """librdkafka's connection error without the address and state it names: "HOST/bootstrap:
    Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)" is
    "Connection refused"."""
    text = re.sub(r" \(after \d+ms in state \w+\)$", "", text)
    text = text.rpartition(" failed: ")[2]
    return re.sub(r"^\S+/\S+: ", "", text)


def _reach_hint(name: str) -> str:
    if not any(c in name for c in ".:,") and name != "localhost" and name not in _ALIASES:
        return f"'{name}' is not a broker alias of the config file (kcp config show)"
    return "is it running? (KCP_BROKER, NAME:topic or -X bootstrap.servers)"
