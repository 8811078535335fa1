"""zrep.security.policy: keys name one identity; grants are mailbox globs; everything else is denied."""

from __future__ import annotations

import pytest
import zmq

from zrep.errors import ConfigError
from zrep.security.policy import Node, Policy, Principal


def key() -> bytes:
    return zmq.curve_keypair()[0]


def test_keys_identify_nodes_and_principals_and_unknown_keys_nobody():
    n1, n2, app, old = key(), key(), key(), key()
    orders = Principal("orders-app", (app, old), send=("orders.*",), read=("orders.*", "replies.orders-app"))
    policy = Policy({1: [n1], 2: [n2]}, [orders])
    assert policy.identify(n1) == Node(1) and policy.identify(n2) == Node(2)
    assert policy.identify(app) is orders and policy.identify(old) is orders
    assert policy.identify(key()) is None and policy.identify(None) is None
    assert policy.node_keys() == {n1, n2}


def test_grants_follow_the_globs_and_say_why_not():
    p = Principal("orders-app", (key(),), send=("orders.*",), read=("orders.*",))
    policy = Policy({}, [p])
    assert policy.refusal(p, "send", "orders.eu") is None
    assert policy.refusal(p, "read", "orders.eu") is None and policy.refusal(p, "watch", "orders.eu") is None
    assert policy.refusal(p, "send", "billing.eu") == \
        'principal "orders-app" may not send mailbox "billing.eu" (send: orders.*)'
    assert "delete: nothing" in policy.refusal(p, "delete", "orders.eu")
    assert "not an admin" in policy.refusal(p, "status")
    assert "not an admin" in policy.refusal(p, "admin")  # membership: members and every change
    assert policy.refusal(p, "mailboxes") is None
    assert policy.visible(p, "orders.x") and not policy.visible(p, "billing.x")
    assert "unknown operation" in policy.refusal(p, "shutdown")


def test_an_admin_may_run_status_and_admin_commands():
    ops = Principal("ops", (key(),), admin=True)
    policy = Policy({}, [ops])
    assert policy.refusal(ops, "status") is None and policy.refusal(ops, "admin") is None
    assert policy.refusal(ops, "send", "x") is not None  # admin is not a mailbox grant


def test_a_key_listed_twice_or_a_bad_name_is_a_config_error():
    k = key()
    with pytest.raises(ConfigError, match="one key names one identity"):
        Policy({1: [k]}, [Principal("app", (k,))])
    with pytest.raises(ConfigError, match="listed twice"):
        Policy({}, [Principal("app", (key(),)), Principal("app", (key(),))])
    with pytest.raises(ConfigError, match="a name is"):
        Policy({}, [Principal("Bad Name", (key(),))])
