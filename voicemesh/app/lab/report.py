"""The lab's evidence, sans-IO: per client city, the edge it was steered to against the nearest one,
and its mesh call against its baseline call, as JSON-ready dicts and as a Markdown table."""

from __future__ import annotations

from collections.abc import Sequence

from voicemesh.app.lab.plan import City, Plan

MILESTONES = ("answer", "ice_connected", "dtls_connected", "first_audio")


def loss_pct(packets_received: int, packets_lost: int) -> float | None:
    """The caller's inbound loss in percent: RTP sequence gaps over the packets expected (received + lost,
    RFC 3550 6.4.1), None if nothing was expected.

    Not sent minus received: the echo of the last round trip's packets is still on its way when the
    call ends, which would count a round trip's worth of packets (more on longer paths) as lost.
    """
    expected = packets_received + packets_lost
    if expected <= 0:
        return None
    return round(100.0 * packets_lost / expected, 2)


def answer_goal_ms(model_rtt_ms: float) -> float:
    """The most a mesh call's WHIP answer should take, ms: a TCP handshake and the POST's round trip over
    the path, and 50 ms of work (issue 12's goal: 2 x model RTT + 50 ms)."""
    return 2 * model_rtt_ms + 50


def mode_result(call: dict, path: str, model_rtt_ms: float, region: str | None = None,
                hops: dict | None = None) -> dict:
    """One call's figures from a ``voicemesh call --json`` report (CallReport.to_dict()).

    ``path`` names the route, ``model_rtt_ms`` is the network round trip the lab models for it, ``region``
    the core region whose transceiver took the call (None: not known, e.g. the call failed);
    ``audio_rtt_ms`` (mouth to ear and back, ms), ``jitter_ms`` (inbound RTP jitter), ``loss_pct``
    (``loss_pct()``), ``setup_ms`` (milestones in ms from createOffer), ``dns_ms`` (resolving the WHIP
    host, before the offer) and the packet counts come from the call; ``answer_hops`` (the edge's
    ``whip_ms``, ``forward_ms``, ``new_connection`` and the transceiver's ``answer_ms``, ``claim_ms``:
    Lab.answer_hops) from the parts' logs.
    """
    received, lost = int(call.get("packets_received") or 0), int(call.get("packets_lost") or 0)
    return {"path": path, "region": region, "model_rtt_ms": round(model_rtt_ms, 1), "ok": bool(call.get("ok")),
            "audio_rtt_ms": call.get("audio_rtt_ms"), "jitter_ms": call.get("jitter_ms"),
            "loss_pct": loss_pct(received, lost), "setup_ms": dict(call.get("setup_ms") or {}),
            "dns_ms": call.get("dns_ms"), "answer_hops": {k: v for k, v in (hops or {}).items() if k != "region"},
            "packets_sent": int(call.get("packets_sent") or 0), "packets_received": received,
            "packets_lost": lost, "error": call.get("error")}


def city_result(plan: Plan, city: City, edge: str | None, mesh: dict, direct: dict,
                hops: tuple[dict, dict] = ({}, {})) -> dict:
    """One city's row: ``city`` (key), ``name``, ``edge`` (where the geo name sent it, None if it did not
    resolve to an edge), ``nearest_edge`` (by the topology), ``distant`` (``Plan.distant``), and the
    ``mesh`` and ``direct`` calls (``mode_result``); ``hops`` the two calls' Lab.answer_hops (with the
    ``region`` that took each)."""
    via = edge or plan.nearest_edge(city)
    return {
        "city": city.key, "name": city.name, "edge": edge, "nearest_edge": plan.nearest_edge(city),
        "distant": plan.distant(city),
        "mesh": mode_result(mesh, f"{via} → {plan.region_for_edge(via).name}", plan.mesh_rtt_ms(city, via),
                            hops[0].get("region"), hops[0]),
        "direct": mode_result(direct, f"{plan.central_edge} → {plan.central.name}", plan.direct_rtt_ms(city),
                              hops[1].get("region"), hops[1]),
    }


def failover_result(plan: Plan, city: City, edge: str | None, from_region: str, call: dict,
                    to_region: str | None) -> dict:
    """One city's mesh call after ``from_region`` failed: ``city``, ``edge``, ``from_region``, ``to_region``
    (the region that took it; None if none did), ``expected_region`` (the next by backbone RTT from the
    edge, Plan.regions_for_edge), ``ok``, ``setup_ms``, ``audio_rtt_ms``, ``model_rtt_ms`` (to the region
    expected) and ``error``."""
    via = edge or plan.nearest_edge(city)
    expected = plan.regions_for_edge(via, without=from_region)
    m = mode_result(call, via, plan.mesh_rtt_ms(city, via, expected[0]) if expected else 0.0, to_region)
    return {"city": city.key, "edge": edge, "from_region": from_region, "to_region": to_region,
            "expected_region": expected[0].name if expected else None, "ok": m["ok"], "setup_ms": m["setup_ms"],
            "audio_rtt_ms": m["audio_rtt_ms"], "model_rtt_ms": m["model_rtt_ms"], "error": m["error"]}


def format_failover(row: dict) -> str:
    """One line about a city's call after its region failed."""
    state = f"rtt {_num(row['audio_rtt_ms'])} ms, answer {_num(row['setup_ms'].get('answer'))} ms" if row["ok"] \
        else f"FAILED: {row['error']}"
    return f"{row['city']}: {row['from_region']} down, call went to {row['to_region'] or 'nothing'}; {state}"


def summary(cities: Sequence[dict]) -> dict:
    """Counts over ``cities``: ``cities``, ``steered_to_nearest``, ``calls_ok`` (both calls), ``distant``,
    and among distant cities with both calls ok, ``mesh_lower_rtt`` and ``mesh_lower_loss``; and among
    distant cities, ``mesh_answer_in_goal``: mesh calls whose WHIP answer came within answer_goal_ms."""
    distant = [c for c in cities if c["distant"]]
    both = [c for c in distant if c["mesh"]["ok"] and c["direct"]["ok"]]
    return {
        "cities": len(cities),
        "steered_to_nearest": sum(c["edge"] == c["nearest_edge"] for c in cities),
        "calls_ok": sum(c["mesh"]["ok"] and c["direct"]["ok"] for c in cities),
        "distant": len(distant),
        "mesh_lower_rtt": sum(_lower(c, "audio_rtt_ms") for c in both),
        "mesh_lower_loss": sum(_lower(c, "loss_pct") for c in both),
        "mesh_answer_in_goal": sum(_answer_in_goal(c["mesh"]) for c in distant),
    }


def _answer_in_goal(mode: dict) -> bool:
    answer = mode["setup_ms"].get("answer")
    return mode["ok"] and answer is not None and answer <= answer_goal_ms(mode["model_rtt_ms"])


def _lower(city: dict, key: str) -> bool:
    mesh, direct = city["mesh"][key], city["direct"][key]
    return mesh is not None and direct is not None and mesh < direct


def lab_result(plan: Plan, cities: Sequence[dict], wan: dict, failover: Sequence[dict] | None = None) -> dict:
    """The whole report: ``ok`` (every city steered to its nearest edge and both its calls ok, and with
    ``failover`` every call after the failure ok on another region), ``central_region``, ``central_edge``,
    ``summary``, ``cities`` (``city_result``), ``wan`` (the emulated network's counters) and, after a
    region failure, ``failover`` (``failover_result``)."""
    counts = summary(cities)
    ok = counts["steered_to_nearest"] == counts["calls_ok"] == counts["cities"]
    result = {"ok": ok, "central_region": plan.central.name, "central_edge": plan.central_edge,
              "summary": counts, "cities": list(cities), "wan": wan}
    if failover is not None:
        result["failover"] = list(failover)
        result["ok"] = ok and all(f["ok"] and f["to_region"] not in (None, f["from_region"]) for f in failover)
    return result


def _num(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def format_progress(city: dict) -> str:
    """One line about a finished city."""
    parts = [f"{city['city']}: steered to {city['edge'] or 'nothing'} (nearest {city['nearest_edge']})"]
    for mode in ("mesh", "direct"):
        m = city[mode]
        state = f"rtt {_num(m['audio_rtt_ms'])} ms, loss {_num(m['loss_pct'], '.1f')}%" if m["ok"] else \
            f"FAILED: {m['error']}"
        parts.append(f"{mode} {state}")
    return "; ".join(parts)


def format_table(result: dict) -> str:
    """The report as a Markdown table (a row per city and call) and two summary lines."""
    rows = ["| city | steered to | nearest edge | call | path | model RTT ms | audio RTT ms | jitter ms | loss % "
            "| setup ms: answer / ICE / DTLS / first audio |",
            "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for city in result["cities"]:
        for mode in ("mesh", "direct"):
            m = city[mode]
            first = mode == "mesh"
            setup = " / ".join(_num(m["setup_ms"].get(k)) for k in MILESTONES)
            rows.append(
                f"| {city['name'] + (' (distant)' if city['distant'] else '') if first else ''} "
                f"| {(city['edge'] or '-') if first else ''} | {city['nearest_edge'] if first else ''} | {mode} "
                f"| {m['path']} | {_num(m['model_rtt_ms'])} | {_num(m['audio_rtt_ms'])} | {_num(m['jitter_ms'], '.1f')} "
                f"| {_num(m['loss_pct'], '.1f')} | {setup if m['ok'] else 'failed: ' + str(m['error'])} |")
    s = result["summary"]
    rows += ["",
             f"steering: {s['steered_to_nearest']} of {s['cities']} cities resolved to their nearest edge; "
             f"calls ok: {s['calls_ok']} of {s['cities']} cities (mesh and direct)",
             f"distant cities (mesh vs direct to {result['central_region']}): {s['distant']}; mesh lower audio "
             f"RTT in {s['mesh_lower_rtt']}, lower loss in {s['mesh_lower_loss']}; mesh WHIP answer within "
             f"2 x model RTT + 50 ms in {s.get('mesh_answer_in_goal', 0)}"]
    if "failover" in result:
        healthy = {c["city"]: c["mesh"] for c in result["cities"]}
        rows += ["", "| city | region down | went to | expected | audio RTT ms (healthy) | answer ms (healthy) |",
                 "| --- | --- | --- | --- | ---: | ---: |"]
        for f in result["failover"]:
            before = healthy.get(f["city"], {})
            rows.append(f"| {f['city']} | {f['from_region']} | {f['to_region'] or 'failed: ' + str(f['error'])} "
                        f"| {f['expected_region']} | {_num(f['audio_rtt_ms'])} ({_num(before.get('audio_rtt_ms'))}) "
                        f"| {_num(f['setup_ms'].get('answer'))} "
                        f"({_num(before.get('setup_ms', {}).get('answer'))}) |")
    return "\n".join(rows)
