"""Benchmark: CPU cost of the agent link per frame and per message (uplink plus its echo), for several batch_ms.

Runs the echo agent in a child process, drives `sessions` x 50 frames/s of 160 B Opus-sized frames
through one AgentLink in this process, and prints one JSON line: this process's CPU (less the driver's
own, measured first without a link) and the agent's (its /proc accounting), per frame and per uplink
message with its downlink. Usage: python bench/agent_link.py [--sessions 20 --batch-ms 10]. With
``--agent speaker`` the child is an SDK agent (voicemesh.agent.sdk) that speaks to every session, its
frames paced by send_audio as a speech agent's are, instead of the echo agent: downlinks then come from
the SDK's batching, not one per uplink.
"""

import argparse
import asyncio
import json
import os
import sys
import time

from voicemesh.agent.v1 import agent_pb2
from voicemesh.core.agent_link import AgentLink

FRAMES_PER_S = 50
TICK_S = 0.002
AGENT = """
import asyncio
from voicemesh.core.echo_agent import serve
async def main():
    server, port = await serve("127.0.0.1:0")
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""
SPEAKER = """
import asyncio
from voicemesh.agent import sdk
class Speaker(sdk.Agent):
    async def on_session(self, session):
        while not session.ended:
            await session.send_audio(bytes(160))
async def main():
    server, port = await sdk.serve(Speaker())
    print(port, flush=True)
    await server.wait_for_termination()
asyncio.run(main())
"""


def process_cpu_s(pid: int) -> float:
    """CPU time (user + system, s) process ``pid`` has used, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(send, sessions: int, duration_s: float) -> tuple[float, int]:
    """Call send(index, frame_number) for every session 50 times/s, sessions spread evenly over
    the 20 ms frame period in 2 ms ticks (as frames arrive from many callers). Returns (CPU s, frames)."""
    loop = asyncio.get_running_loop()
    ticks_per_frame = round(1 / FRAMES_PER_S / TICK_S)
    cpu = time.process_time()
    start = loop.time()
    frames = 0
    tick = 0
    while tick * TICK_S < duration_s:
        phase = tick % ticks_per_frame
        for index in range(phase, sessions, ticks_per_frame):
            send(index, tick // ticks_per_frame)
            frames += 1
        tick += 1
        await asyncio.sleep(max(0.0, start + tick * TICK_S - loop.time()))
    return time.process_time() - cpu, frames


async def measure(port: int, agent_pid: int, batch_ms: float, sessions: int, duration_s: float, baseline_cpu_s: float) -> dict:
    link = AgentLink(f"127.0.0.1:{port}", batch_ms=batch_ms)
    await link.start()
    while not link.connected:
        await asyncio.sleep(0.01)
    echoed = [0]

    def on_frame(payload: bytes, timestamp: int) -> None:
        echoed[0] += 1

    opened = []
    for n in range(sessions):  # spread over a frame period, as calls that began at different times
        opened.append(link.open_session(
            f"bench-{n}", codec=agent_pb2.CODEC_OPUS, sample_rate_hz=48000, on_frame=on_frame,
            on_end=lambda reason: print("session ended:", reason, file=sys.stderr),
        ))
        await asyncio.sleep(1 / FRAMES_PER_S / sessions)
    payload = bytes(160)
    uplinks, downlinks = link.uplink_messages, link.downlink_messages
    agent_cpu_s = process_cpu_s(agent_pid)
    cpu_s, frames = await drive(lambda index, n: opened[index].send(payload, n * 960), sessions, duration_s)
    agent_cpu_s = process_cpu_s(agent_pid) - agent_cpu_s
    uplinks, downlinks = link.uplink_messages - uplinks, link.downlink_messages - downlinks
    await asyncio.sleep(0.5)
    await link.close()
    return {
        "batch_ms": batch_ms,
        "cpu_us_per_frame": round((cpu_s - baseline_cpu_s) / frames * 1e6, 1),
        "cpu_percent": round((cpu_s - baseline_cpu_s) / duration_s * 100, 1),
        "cpu_us_per_message": round((cpu_s - baseline_cpu_s) / uplinks * 1e6, 1),
        "agent_cpu_percent": round(agent_cpu_s / duration_s * 100, 1),
        "agent_cpu_us_per_message": round(agent_cpu_s / uplinks * 1e6, 1),
        "uplink_messages_per_s": round(uplinks / duration_s),
        "downlink_messages_per_s": round(downlinks / duration_s),
        "frames_sent": frames,
        "frames_echoed": echoed[0],
        "dropped_frames": link.dropped_frames,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per batch_ms setting")
    parser.add_argument("--batch-ms", type=float, nargs="+", default=[0, 5, 10])
    parser.add_argument("--agent", choices=["echo", "speaker"], default="echo")
    args = parser.parse_args()
    code = AGENT if args.agent == "echo" else SPEAKER
    agent = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    try:
        port = int(await agent.stdout.readline())
        baseline_cpu_s, _ = await drive(lambda index, n: None, args.sessions, args.duration)
        results = [
            await measure(port, agent.pid, batch_ms, args.sessions, args.duration, baseline_cpu_s) for batch_ms in args.batch_ms
        ]
    finally:
        agent.terminate()
        await agent.wait()
    print(
        json.dumps(
            {
                "bench": "agent_link",
                "agent": args.agent,
                "sessions": args.sessions,
                "frames_per_s_per_session": FRAMES_PER_S,
                "frame_bytes": 160,
                "duration_s": args.duration,
                "driver_cpu_percent": round(baseline_cpu_s / args.duration * 100, 1),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
