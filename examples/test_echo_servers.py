"""Several asyncio TCP echo servers per test, each on a port no other worker uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pytest_aiops.plugin import GitWorktree, PortRange


async def _serve_and_talk(ports: list[int], log: Path) -> list[bytes]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.readline()
        writer.write(data.upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    servers = [await asyncio.start_server(echo, "127.0.0.1", port) for port in ports]
    try:
        replies = []
        for port in ports:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"hello {port}\n".encode())
            await writer.drain()
            replies.append(await reader.readline())
            writer.close()
            await writer.wait_closed()
        with log.open("a") as handle:
            handle.writelines(f"echoed on {port}\n" for port in ports)
        return replies
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("round_", ["first", "second"])
def test_echo_servers(
    port_range: PortRange, git_worktree: GitWorktree, count: int, round_: str
) -> None:
    ports = port_range.next_ports(count)
    assert all(port in port_range for port in ports)
    log = git_worktree.path / "echo.log"
    replies = asyncio.run(_serve_and_talk(ports, log))
    assert replies == [f"HELLO {port}\n".encode() for port in ports]
    assert not (git_worktree.repo_root / "echo.log").exists()
