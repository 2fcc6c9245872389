"""The TSRequest bytes the probe sends and reads ([MS-CSSP] 2.2.1), checked against
pyspnego's own CredSSP structures (a pywinrm dependency; its module is private, so this
is a test-only cross-check)."""

from __future__ import annotations

import pytest

from rdplab import credssp_wire as w

spnego = pytest.importorskip("spnego._credssp_structures", reason="pyspnego is not installed")


@pytest.mark.parametrize(("version", "token"), [(6, None), (3, b"abc"), (5, b"x" * 300)])
def test_ts_request_matches_pyspnego(version: int, token: bytes | None) -> None:
    ours = w.ts_request(version, token)
    theirs = spnego.TSRequest(
        version=version, nego_tokens=[spnego.NegoData(token or w.ntlm_negotiate())]
    ).pack()
    assert ours == theirs
    assert w.ts_request_version(theirs) == version
    assert w.message_length(ours[:6]) == len(ours)


def test_reads_the_version_of_a_server_answer_with_more_fields() -> None:
    answer = spnego.TSRequest(
        version=6, nego_tokens=[spnego.NegoData(b"NTLMSSP\x00\x02")], error_code=0
    ).pack()
    assert w.ts_request_version(answer) == 6


def test_ntlm_negotiate_names_nobody() -> None:
    msg = w.ntlm_negotiate()
    assert msg.startswith(b"NTLMSSP\x00\x01\x00\x00\x00")
    assert msg[16:] == b"\x00" * 16  # empty domain and workstation fields


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated"),
        (b"\x04\x02ab", "not a SEQUENCE"),
        (b"\x30\x05\xa1\x03\x02\x01\x06", "not version"),
        (b"\x30\x05\xa0\x03\x04\x01\x06", "not a small INTEGER"),
        (b"\x30\x09\xa0\x03\x02\x01", "truncated"),
        (b"\x30\x85\x01\x02\x03\x04\x05", "bad length"),
        (b"HTTP/1.1 400 Bad Request", "not a SEQUENCE"),
    ],
)
def test_garbage_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(w.WireError, match=message):
        w.ts_request_version(data)


def test_message_length_needs_the_length_bytes() -> None:
    big = w.ts_request(6, b"x" * 300)
    assert w.message_length(big[:1]) is None
    assert w.message_length(big[:3]) is None  # long form: two length bytes follow 0x82
    assert w.message_length(big[:4]) == len(big)
    with pytest.raises(w.WireError):
        w.message_length(b"HT")
