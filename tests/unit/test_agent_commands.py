"""The command lines sent to Windows stay below cmd.exe's limit and decode back."""

from __future__ import annotations

from rdplab.agent import AGENT_PATH, commands


def test_every_command_line_fits_cmd_exe() -> None:
    longest_chunk = "A" * commands.CHUNK
    lines = [
        commands.hash_command(),
        commands.chunk_command(0, longest_chunk),
        commands.chunk_command(1, longest_chunk),
        commands.finish_command(),
        commands.call_command(),
    ]
    assert max(len(line) for line in lines) < commands.CMD_LIMIT


def test_encoded_commands_decode_to_the_script() -> None:
    script = commands.decode(commands.chunk_command(3, "QUJD"))
    assert script is not None
    assert "AppendAllText" in script
    assert "'QUJD'" in script
    hash_script = commands.decode(commands.hash_command())
    assert hash_script is not None
    assert AGENT_PATH in hash_script
    assert commands.decode(commands.call_command()) is None  # plain -File, request on stdin
