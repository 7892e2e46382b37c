"""Tests for edge.flows: the relay's flow table, its per-token cap and its sweep-based aging.

The packet rules that drive the table are tested bytes in, bytes out in tests/test_relay_core.py.
"""

import pytest

from voicemesh.edge.flows import FlowState, FlowTable, FlowTableFull
from voicemesh.wire import frame
from voicemesh.wire.token import RoutingToken

pytestmark = pytest.mark.unit

CLIENT = ("198.51.100.7", 50000)
REBOUND_CLIENT = ("198.51.100.7", 50001)
TRANSCEIVER = ("10.0.1.5", 7000)
TOKEN = RoutingToken(key_id=0, region=1, transceiver=5, nonce=1, issued_at=1_000, expires_at=2_000_000_000)
OTHER_TOKEN = RoutingToken(key_id=0, region=1, transceiver=5, nonce=2, issued_at=1_000, expires_at=2_000_000_000)
WINDOW_END = 1_030.0


def learn(table: FlowTable, client=CLIENT, token=TOKEN, now: float = 1_001.0):
    flow, _ = table.learn(client, TRANSCEIVER, token, b"ufrag", now, open_until=WINDOW_END)
    return flow


def test_learn_then_look_up_by_client_header_and_token():
    table = FlowTable(edge_id=9)

    flow = learn(table)

    assert (flow.client, flow.transceiver, flow.token, flow.created_at) == (CLIENT, TRANSCEIVER, TOKEN, 1_001.0)
    assert flow.header == frame.encode_header(CLIENT, 9)
    assert flow.state is FlowState.PROVISIONAL
    assert table.by_client == {CLIENT: flow}
    assert table.by_header == {flow.header: flow}
    assert table.of_token(TOKEN) == [flow]
    assert table.open_by_client == {} and table.open_by_header == {}


def test_after_the_window_a_new_flow_is_pending():
    table = FlowTable(edge_id=9)

    assert learn(table, now=WINDOW_END).state is FlowState.PENDING


def test_a_client_with_a_flow_cannot_be_learned_again():
    table = FlowTable(edge_id=9)
    learn(table)

    with pytest.raises(ValueError):
        learn(table)


def test_prove_puts_the_flow_on_the_fast_path():
    table = FlowTable(edge_id=9)
    flow = learn(table)
    flow.checks.append(b"t" * 12)

    table.prove(flow)

    assert flow.state is FlowState.OPEN and flow.checks == []
    assert table.open_by_client == {CLIENT: flow}
    assert table.open_by_header == {flow.header: flow}


def test_remove_clears_every_index():
    table = FlowTable(edge_id=1)
    flow = learn(table)
    table.prove(flow)

    assert table.remove(flow) is True
    assert table.remove(flow) is False
    assert (table.by_client, table.by_header, table.open_by_client, table.open_by_header) == ({}, {}, {}, {})
    assert table.of_token(TOKEN) == []


def test_remove_token_takes_all_its_flows_and_no_others():
    table = FlowTable(edge_id=1)
    a, b = learn(table), learn(table, REBOUND_CLIENT)
    other = learn(table, ("192.0.2.1", 1), OTHER_TOKEN)

    assert table.remove_token(TOKEN) == [a, b]
    assert list(table.by_client.values()) == [other]


def test_at_the_token_cap_the_oldest_unanswered_unproven_flow_is_evicted():
    table = FlowTable(edge_id=1, max_flows_per_token=3)
    proven = learn(table, ("192.0.2.1", 1), now=1_001.0)
    table.prove(proven)
    answered = learn(table, ("192.0.2.2", 1), now=1_002.0)
    answered.answered = True
    unanswered = learn(table, ("192.0.2.3", 1), now=1_003.0)

    newest, evicted = table.learn(("192.0.2.4", 1), TRANSCEIVER, TOKEN, b"u", 1_004.0, open_until=WINDOW_END)
    assert evicted is unanswered
    _, evicted = table.learn(("192.0.2.5", 1), TRANSCEIVER, TOKEN, b"u", 1_005.0, open_until=WINDOW_END)
    assert evicted is newest
    _, evicted = table.learn(("192.0.2.6", 1), TRANSCEIVER, TOKEN, b"u", 1_006.0, open_until=WINDOW_END)
    assert evicted.client == ("192.0.2.5", 1)

    assert proven in table.of_token(TOKEN) and answered in table.of_token(TOKEN)
    assert len(table.of_token(TOKEN)) == 3


def test_a_token_with_only_proven_flows_is_full():
    table = FlowTable(edge_id=1, max_flows_per_token=1)
    table.prove(learn(table))

    with pytest.raises(FlowTableFull) as caught:
        learn(table, REBOUND_CLIENT)

    assert caught.value.reason == "token_cap"
    assert learn(table, REBOUND_CLIENT, OTHER_TOKEN).token == OTHER_TOKEN


def test_a_full_table_refuses_new_clients():
    table = FlowTable(edge_id=1, max_flows=2)
    learn(table, ("192.0.2.1", 1))
    learn(table, ("192.0.2.2", 1), OTHER_TOKEN)

    with pytest.raises(FlowTableFull) as caught:
        learn(table, ("192.0.2.3", 1), RoutingToken(0, 1, 5, 3, 1_000, 2_000_000_000))

    assert caught.value.reason == "table_full"


def test_active_open_flows_survive_sweeps_and_idle_ones_expire():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0, pending_timeout_s=10.0)
    busy, idle = learn(table), learn(table, REBOUND_CLIENT, OTHER_TOKEN)
    table.prove(busy)
    table.prove(idle)

    for now in (1_015.0, 1_030.0, 1_045.0, 1_060.0):
        busy.packets_in += 1
        assert table.expire(now) == []
    busy.packets_out += 1  # return traffic alone keeps a flow alive too

    assert table.expire(1_075.0) == [idle]
    assert list(table.by_client.values()) == [busy]


def test_an_open_flow_goes_idle_timeout_after_the_sweep_that_last_saw_it_move():
    table = FlowTable(edge_id=1, idle_timeout_s=60.0)
    flow = learn(table, now=0.0)
    table.prove(flow)
    flow.packets_in += 1  # the last packet, seen moving by the sweep at 15 s

    assert table.expire(15.0) == []
    assert table.expire(74.0) == []
    assert table.expire(75.0) == [flow]
    assert table.by_header == {}


def test_unproven_flows_go_after_the_pending_timeout_even_when_busy():
    table = FlowTable(edge_id=1, pending_timeout_s=10.0)
    old = learn(table, now=1_001.0)
    young = learn(table, REBOUND_CLIENT, now=1_005.0)
    old.packets_in += 5

    assert table.expire(1_010.0) == []
    assert table.expire(1_011.0) == [old]
    assert table.expire(1_015.0) == [young]


def test_the_sweep_turns_provisional_flows_pending_when_their_window_ends():
    table = FlowTable(edge_id=1, pending_timeout_s=100.0)
    flow = learn(table)

    table.expire(WINDOW_END - 1)
    assert flow.state is FlowState.PROVISIONAL
    table.expire(WINDOW_END)
    assert flow.state is FlowState.PENDING


@pytest.mark.parametrize(
    "settings",
    [dict(edge_id=65536), dict(edge_id=1, idle_timeout_s=0), dict(edge_id=1, max_flows=0),
     dict(edge_id=1, max_flows_per_token=0), dict(edge_id=1, pending_timeout_s=0)],
)
def test_bad_settings(settings):
    with pytest.raises(ValueError):
        FlowTable(**settings)
