"""The first CredSSP message, enough to learn a server's CredSSP protocol version.

After TLS, a CredSSP client sends a TSRequest ([MS-CSSP] 2.2.1) carrying its first NTLM
message (NEGOTIATE_MESSAGE, [MS-NLMP] 2.2.1.1) and the server answers with a TSRequest of
its own whose ``version`` field is the CredSSP version it implements. That answer comes
before any credential is needed. Versions 5 and 6 carry the client nonce that the 2018
CredSSP update (CVE-2018-0886) added; a server answering 2, 3 or 4 lacks that update
(docs/sources.md section 12). Only the DER this exchange needs is written and read here: the
TSRequest module uses explicit tags, so every field is a context tag around a universal
type.
"""

from __future__ import annotations

import struct

#: the version rdplab's probe announces (the newest in [MS-CSSP] 2.2.1)
CLIENT_VERSION = 6
#: the first version with the CVE-2018-0886 fix (the clientNonce field)
FIXED_VERSION = 5

# NEGOTIATE_MESSAGE flags ([MS-NLMP] 2.2.2.5): UNICODE, REQUEST_TARGET, SIGN, SEAL, NTLM,
# ALWAYS_SIGN, EXTENDED_SESSIONSECURITY, 128, KEY_EXCH, 56
_NTLM_FLAGS = (
    0x00000001
    | 0x00000004
    | 0x00000010
    | 0x00000020
    | 0x00000200
    | 0x00008000
    | 0x00080000
    | 0x20000000
    | 0x40000000
    | 0x80000000
)


class WireError(ValueError):
    """The peer's bytes are not the TSRequest this exchange expects."""


def ntlm_negotiate() -> bytes:
    """An NTLM NEGOTIATE_MESSAGE without domain, workstation or version fields."""
    return b"NTLMSSP\x00" + struct.pack("<II", 1, _NTLM_FLAGS) + b"\x00" * 16


def _der(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True))


def ts_request(version: int = CLIENT_VERSION, token: bytes | None = None) -> bytes:
    """TSRequest { version [0] INTEGER, negoTokens [1] NegoData } with one token."""
    token = ntlm_negotiate() if token is None else token
    nego_data = _der(0x30, _der(0x30, _der(0xA0, _der(0x04, token))))
    return _der(0x30, _der(0xA0, _integer(version)) + _der(0xA1, nego_data))


def ts_error(version: int, error_code: int) -> bytes:
    """TSRequest { version [0] INTEGER, errorCode [4] INTEGER }: a server's refusal (an
    NTSTATUS, [MS-CSSP] 2.2.1, version 3 and later), as the 32-bit value's two's complement."""
    signed = error_code - (1 << 32) if error_code >= 1 << 31 else error_code
    code = _der(0x02, signed.to_bytes(4, "big", signed=True))
    return _der(0x30, _der(0xA0, _integer(version)) + _der(0xA4, code))


def _read_tlv(data: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the element at ``at``."""
    if at + 2 > len(data):
        raise WireError("truncated")
    tag, first = data[at], data[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or at + count > len(data):
            raise WireError("bad length")
        length = int.from_bytes(data[at : at + count], "big")
        at += count
    if at + length > len(data):
        raise WireError("truncated")
    return tag, at, at + length


def message_length(head: bytes) -> int | None:
    """Bytes of the whole DER message that starts with ``head`` (None: need more bytes)."""
    if len(head) < 2:
        return None
    if head[0] != 0x30:
        raise WireError(f"starts with 0x{head[0]:02x}, not a SEQUENCE")
    first = head[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise WireError("bad length")
    if len(head) < 2 + count:
        return None
    return 2 + count + int.from_bytes(head[2 : 2 + count], "big")


def ts_request_version(data: bytes) -> int:
    """The ``version`` of a TSRequest."""
    if data[:1] not in (b"", b"\x30"):
        raise WireError(f"starts with 0x{data[0]:02x}, not a SEQUENCE")
    _, start, end = _read_tlv(data, 0)
    tag, start, _ = _read_tlv(data[:end], start)
    if tag != 0xA0:
        raise WireError(f"first field has tag 0x{tag:02x}, not version [0]")
    tag, vstart, vend = _read_tlv(data, start)
    if tag != 0x02 or not 1 <= vend - vstart <= 4:
        raise WireError("version is not a small INTEGER")
    return int.from_bytes(data[vstart:vend], "big", signed=True)
