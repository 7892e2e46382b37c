"""``voicemesh lab run --plot FILE``: the lab report drawn with matplotlib (no map tiles).

Two views side by side: per city, the audio round trip of the mesh call against the direct call as bars
(and after ``--fail-region``, the moved call's); and longitude against latitude with the cities, edges and
core regions, a line from each city to the edge it was steered to and on to the region that took its call.
"""

from __future__ import annotations

from voicemesh.app.lab.plan import Plan


def draw(plan: Plan, result: dict, path: str) -> None:
    """Write the two views of ``result`` (runner.run's report for ``plan``) to ``path``; the format follows
    its suffix (``.svg``, ``.png``, ``.pdf``). Raises OSError, ValueError (an unknown format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cities = result["cities"]
    moved = {f["city"]: f for f in result.get("failover", [])}
    figure, (bars, world) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1, 1.4]})
    xs = range(len(cities))
    width = 0.8 / (3 if moved else 2)
    series = [("mesh", [c["mesh"]["audio_rtt_ms"] or 0 for c in cities]),
              (f"direct to {result['central_region']}", [c["direct"]["audio_rtt_ms"] or 0 for c in cities])]
    if moved:
        series.append(("mesh after the region failed", [moved[c["city"]]["audio_rtt_ms"] or 0 if c["city"] in moved
                                                        else 0 for c in cities]))
    for i, (label, values) in enumerate(series):
        bars.bar([x + i * width for x in xs], values, width, label=label)
    bars.set_xticks([x + width * (len(series) - 1) / 2 for x in xs], [c["name"] for c in cities], rotation=45,
                    ha="right")
    bars.set_ylabel("audio round trip (ms)")
    bars.set_title("audio RTT per city: mesh vs direct")
    bars.legend()

    sites = plan.sites
    regions = {r.name: sites[r.site] for r in plan.regions}
    for city, row in zip(plan.cities, cities, strict=True):
        edge = plan.node(row["edge"] or row["nearest_edge"])
        region = regions.get(row["mesh"]["region"] or plan.region_for_edge(edge.name).name)
        world.plot([city.lon, edge.lon], [city.lat, edge.lat], color="tab:blue", linewidth=1)
        if region is not None:
            world.plot([edge.lon, region["lon"]], [edge.lat, region["lat"]], color="tab:orange", linewidth=1)
        world.annotate(city.name, (city.lon, city.lat), fontsize=7, xytext=(3, 3), textcoords="offset points")
    world.scatter([c.lon for c in plan.cities], [c.lat for c in plan.cities], marker="o", color="tab:blue",
                  label="client city", zorder=3)
    edges = [plan.node(e) for e in plan.edges]
    world.scatter([e.lon for e in edges], [e.lat for e in edges], marker="^", color="tab:green", label="edge",
                  zorder=3)
    world.scatter([r["lon"] for r in regions.values()], [r["lat"] for r in regions.values()], marker="s", s=80,
                  color="tab:red", label="core region", zorder=4)
    for name, where in regions.items():
        world.annotate(name, (where["lon"], where["lat"]), fontsize=8, weight="bold", xytext=(4, -10),
                       textcoords="offset points")
    world.set_xlim(-180, 180)
    world.set_ylim(-60, 75)
    world.set_xlabel("longitude (°)")
    world.set_ylabel("latitude (°)")
    world.set_title("cities → edge (blue) → core region (orange)")
    world.grid(True, linewidth=0.3)
    world.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
