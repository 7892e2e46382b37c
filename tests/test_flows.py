"""Tests for edge.flows: the relay's flow table and its sweep-based aging."""

import pytest

from voicemesh.edge.flows import FlowTable, FlowTableFull
from voicemesh.wire import frame
from voicemesh.wire.token import RoutingToken

pytestmark = pytest.mark.unit

CLIENT = ("198.51.100.7", 50000)
REBOUND_CLIENT = ("198.51.100.7", 50001)
TRANSCEIVER = ("10.0.1.5", 7000)
OTHER_TRANSCEIVER = ("10.0.1.6", 7000)
TOKEN = RoutingToken(key_id=0, region=1, transceiver=5, nonce=1, expires_at=2_000_000_000)
OTHER_TOKEN = RoutingToken(key_id=0, region=1, transceiver=6, nonce=2, expires_at=2_000_000_000)


def relay_client_packet(table: FlowTable, client, size: int = 120) -> None:
    """What the relay does for a client -> transceiver packet."""
    flow = table.by_client[client]
    flow.packets_in += 1
    flow.bytes_in += size


def relay_transceiver_packet(table: FlowTable, data: bytes):
    """What the relay does for a transceiver -> client frame; returns (client, datagram)."""
    n = frame.header_length(data)
    flow = table.by_header[data[:n]]
    flow.packets_out += 1
    flow.bytes_out += len(data) - n
    return flow.client, data[n:]


def test_learn_then_look_up_by_client():
    table = FlowTable(edge_id=9)

    flow = table.learn(CLIENT, TRANSCEIVER, TOKEN, now=100.0)

    assert table.by_client.get(CLIENT) is flow
    assert (flow.client, flow.transceiver, flow.token, flow.created_at) == (CLIENT, TRANSCEIVER, TOKEN, 100.0)
    assert flow.header == frame.encode_header(CLIENT, 9)
    assert (flow.packets_in, flow.bytes_in, flow.packets_out, flow.bytes_out) == (0, 0, 0, 0)
    assert len(table) == 1
    assert table.by_client.get(REBOUND_CLIENT) is None


def test_return_path_header_maps_back_to_the_flow_and_its_client():
    table = FlowTable(edge_id=9)
    flow = table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)
    relay_client_packet(table, CLIENT, size=200)

    client, datagram = relay_transceiver_packet(table, flow.header + b"srtp payload")

    assert table.by_header[flow.header] is flow
    assert (client, datagram) == (CLIENT, b"srtp payload")
    assert (flow.packets_in, flow.bytes_in, flow.packets_out, flow.bytes_out) == (1, 200, 1, 12)


def test_frames_for_unknown_clients_find_nothing():
    table = FlowTable(edge_id=9)
    table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)

    assert table.by_header.get(frame.encode_header(REBOUND_CLIENT, 9)) is None
    assert table.by_header.get(frame.encode_header(CLIENT, 10)) is None  # another edge's header


def test_ipv6_client():
    table = FlowTable(edge_id=1)
    client = ("2001:db8::7", 50000, 0, 0)  # as an AF_INET6 socket reports it
    flow = table.learn(client, TRANSCEIVER, TOKEN, now=0.0)

    assert len(flow.header) == 24
    assert table.by_header[flow.header].client == client


def test_active_flows_survive_sweeps_and_idle_ones_expire():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0)
    table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)
    table.learn(REBOUND_CLIENT, TRANSCEIVER, OTHER_TOKEN, now=0.0)

    for now in (15.0, 30.0, 45.0):
        relay_client_packet(table, CLIENT)
        assert table.expire(now) == []
    relay_client_packet(table, CLIENT)

    expired = table.expire(60.0)

    assert [flow.client for flow in expired] == [REBOUND_CLIENT]
    assert list(table.by_client) == [CLIENT]
    assert [flow.client for flow in table.by_header.values()] == [CLIENT]


def test_return_traffic_alone_keeps_a_flow_alive():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0)
    flow = table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)

    for now in (15.0, 30.0, 45.0, 60.0, 75.0):
        relay_transceiver_packet(table, flow.header + b"x")
        assert table.expire(now) == []


def test_a_flow_goes_idle_timeout_after_the_sweep_that_last_saw_it_move():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0)
    table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)
    relay_client_packet(table, CLIENT)  # the last packet, seen moving by the sweep at 15 s

    assert table.expire(15.0) == []
    assert table.expire(74.0) == []
    assert [flow.client for flow in table.expire(75.0)] == [CLIENT]
    assert len(table) == 0
    assert table.by_header == {}


def test_learn_again_replaces_the_flow():
    table = FlowTable(edge_id=1)
    old = table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)
    relay_client_packet(table, CLIENT)

    new = table.learn(CLIENT, OTHER_TRANSCEIVER, OTHER_TOKEN, now=5.0)

    assert new is not old
    assert table.by_client[CLIENT] is new
    assert (new.transceiver, new.token, new.created_at, new.packets_in) == (OTHER_TRANSCEIVER, OTHER_TOKEN, 5.0, 0)
    assert table.by_header[new.header] is new
    assert len(table) == 1


def test_nat_rebinding_is_a_new_flow_and_the_old_one_ages_out():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0)
    table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)
    table.learn(REBOUND_CLIENT, TRANSCEIVER, TOKEN, now=20.0)
    relay_client_packet(table, REBOUND_CLIENT)

    assert len(table) == 2
    assert [flow.client for flow in table.expire(60.0)] == [CLIENT]
    assert list(table.by_client) == [REBOUND_CLIENT]


def test_remove():
    table = FlowTable(edge_id=1)
    flow = table.learn(CLIENT, TRANSCEIVER, TOKEN, now=0.0)

    assert table.remove(CLIENT) is flow
    assert table.remove(CLIENT) is None
    assert len(table) == 0
    assert table.by_header == {}


def test_full_table_refuses_new_clients_but_still_replaces():
    table = FlowTable(edge_id=1, max_flows=2)
    table.learn(("192.0.2.1", 1), TRANSCEIVER, TOKEN, now=0.0)
    table.learn(("192.0.2.2", 1), TRANSCEIVER, TOKEN, now=0.0)

    with pytest.raises(FlowTableFull) as caught:
        table.learn(("192.0.2.3", 1), TRANSCEIVER, TOKEN, now=0.0)

    assert caught.value.reason == "table_full"
    assert table.learn(("192.0.2.2", 1), OTHER_TRANSCEIVER, TOKEN, now=1.0).transceiver == OTHER_TRANSCEIVER
    table.remove(("192.0.2.1", 1))
    table.learn(("192.0.2.3", 1), TRANSCEIVER, TOKEN, now=2.0)
    assert len(table) == 2


@pytest.mark.parametrize(
    "kwargs", [dict(edge_id=65536), dict(edge_id=1, idle_timeout_s=0), dict(edge_id=1, max_flows=0)]
)
def test_bad_settings(kwargs):
    with pytest.raises(ValueError):
        FlowTable(**kwargs)
